"""Cost of one minimum-velocity training step relative to one sliced-score-matching step.

One step = the estimator's batch mean on the same energy and data, then ``backward()`` into the
energy's parameters (no optimiser). Estimators: :func:`pyro_vsm.infer.mvl.langevin_mvl`,
:func:`~pyro_vsm.infer.mvl.dsm` and :func:`~pyro_vsm.infer.mvl.cd1` (each with its control
variate) against :func:`pyro_vsm.ops.sliced_score_matching` (variance-reduced,
one Rademacher projection: one input gradient and one Hessian-vector product, both with
``create_graph``). MVL needs one input gradient with ``create_graph`` and one extra energy
evaluation, so its backward pass is one order of differentiation lower than SSM's.

Settings: ``banana``, the energy of Wang et al.'s Figure 1 (:class:`~pyro_vsm.distributions.
QuadraticFormEnergy`, d = 2, two hidden layers of 100 SiLU units with spectral normalisation),
batch 200; ``mlp-64``, :class:`~pyro_vsm.distributions.MLPEnergy` with d = 64 and two hidden
layers of 256 SiLU units, batch 256. All estimators of a setting are timed in one run,
interleaved over several rounds, with one torch thread; the ratio is the median step time of an
estimator over the median step time of SSM. Writes JSON.

    python benchmarks/mvl.py [--dtype float64] [--out results/mvl.json] [--smoke]
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn

from pyro_vsm.distributions import MLPEnergy, QuadraticFormEnergy
from pyro_vsm.infer.mvl import cd1, dsm, langevin_mvl
from pyro_vsm.ops import sliced_score_matching

STEP_SIZE = 1e-3
ESTIMATORS = {
    "ssm": lambda e, x: sliced_score_matching(lambda z: -e(z), x),
    "mvl": lambda e, x: langevin_mvl(e, x, STEP_SIZE),
    "dsm": lambda e, x: dsm(e, x, STEP_SIZE),
    "cd1": lambda e, x: cd1(e, x, STEP_SIZE),
}


def settings(dtype, smoke):
    hidden = (16, 16) if smoke else None
    banana = QuadraticFormEnergy(
        2,
        hidden=hidden or (100, 100),
        activation=nn.SiLU,
        confinement=0.0,
        spectral_norm=True,
        dtype=dtype,
    )
    mlp = MLPEnergy(64, hidden=hidden or (256, 256), activation=nn.SiLU, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    return {
        "banana": (banana, torch.randn(200, 2, generator=g, dtype=dtype)),
        "mlp-64": (mlp, torch.randn(256, 64, generator=g, dtype=dtype)),
    }


def time_steps(name, energy, x, steps):
    fn = ESTIMATORS[name]
    start = time.perf_counter()
    for _ in range(steps):
        energy.zero_grad(set_to_none=True)
        fn(energy, x).mean().backward()
    return (time.perf_counter() - start) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="timed steps per estimator per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", default="results/mvl.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds = 2, 1
    dtype = getattr(torch, args.dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = {
            "device": f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 torch thread",
            "torch": torch.__version__,
            "dtype": args.dtype,
            "step_size": STEP_SIZE,
            "steps": args.steps,
            "rounds": args.rounds,
            "settings": {},
        }
        for setting, (energy, x) in settings(dtype, args.smoke).items():
            for name in ESTIMATORS:  # warm-up
                time_steps(name, energy, x, 2)
            times = {name: [] for name in ESTIMATORS}
            for _ in range(args.rounds):
                for name in ESTIMATORS:
                    times[name].append(time_steps(name, energy, x, args.steps))
            base = statistics.median(times["ssm"])
            result["settings"][setting] = {
                "data_dim": x.shape[1],
                "batch": x.shape[0],
                "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
                "ratio_to_ssm": {k: statistics.median(v) / base for k, v in times.items()},
            }
    finally:
        torch.set_num_threads(threads)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for setting, r in result["settings"].items():
        print(f"{setting} (d = {r['data_dim']}, batch {r['batch']}, {args.dtype}):")
        for k in ESTIMATORS:
            print(
                f"  {k:<4} {r['seconds_per_step'][k] * 1e3:8.2f} ms/step  "
                f"{r['ratio_to_ssm'][k]:5.2f}x SSM"
            )
    return result


if __name__ == "__main__":
    main()
