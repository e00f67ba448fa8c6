"""Step time of each loss relative to Trace_ELBO on the same Gaussian VAE.

MLP Gaussian VAE, 784-d data, 20-d latent, batch 128 (the Foundation issue's setting). All losses are
timed in one run, interleaved over several rounds; the ratio is the median step time of a loss over
the median step time of Trace_ELBO. Writes JSON.

    python benchmarks/step_time.py [--device cuda] [--out results/step_time.json] [--smoke]
"""

import argparse
import json
import os
import platform
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm import JointFisherLoss, M1Loss
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import GaussianVAE

LOSSES = {
    "Trace_ELBO": lambda: Trace_ELBO(max_plate_nesting=1),
    "M1Loss(kl, J=1)": lambda: M1Loss("kl", guide_steps=1, max_plate_nesting=1),
    "M1Loss(kl, J=5, S=5)": lambda: M1Loss(
        "kl", guide_steps=5, num_particles=5, vectorize_particles=True, max_plate_nesting=1
    ),
    "M1Loss(fisher, J=1)": lambda: M1Loss("fisher", guide_steps=1, max_plate_nesting=1),
    "M1Loss(fisher-reparam, J=1)": lambda: M1Loss(
        "fisher-reparam", guide_steps=1, max_plate_nesting=1
    ),
    "JointFisherLoss": lambda: JointFisherLoss(max_plate_nesting=1),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(name, x, device, steps, hidden):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = GaussianVAE.mlp(x.shape[-1], 20, hidden=hidden).to(device)
    guide = DiagonalNormalEncoder.mlp(x.shape[-1], 20, hidden=hidden).to(device)
    svi = SVI(model, guide, Adam({"lr": 1e-4}), loss=LOSSES[name]())
    for _ in range(4):  # warm-up: param creation, optimizer state, allocator
        svi.step(x)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        svi.step(x)
    _sync(device)
    return (time.perf_counter() - start) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=40, help="timed steps per loss per round (even)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--out", default="results/step_time.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds, args.hidden = 2, 1, [16]
    device = torch.device(args.device)
    x = torch.rand(128, 784, generator=torch.Generator().manual_seed(0)).to(device)
    times = {name: [] for name in LOSSES}
    for _ in range(args.rounds):
        for name in LOSSES:
            times[name].append(time_steps(name, x, device, args.steps, args.hidden))
    base = statistics.median(times["Trace_ELBO"])
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "setting": {
            "data_dim": 784,
            "latent_dim": 20,
            "batch": 128,
            "hidden": args.hidden,
            "steps": args.steps,
            "rounds": args.rounds,
        },
        "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
        "ratio_to_trace_elbo": {k: statistics.median(v) / base for k, v in times.items()},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    width = max(map(len, LOSSES))
    print(f"device {result['device']} ({result['device_name']}), batch 128, 784-d, 20-d latent")
    for k in LOSSES:
        print(
            f"{k:<{width}}  {result['seconds_per_step'][k] * 1e3:8.2f} ms/step  "
            f"{result['ratio_to_trace_elbo'][k]:5.2f}x Trace_ELBO"
        )
    return result


if __name__ == "__main__":
    main()
