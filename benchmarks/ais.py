"""AIS sampler quality against exact transitions, and AIS throughput against plain torch.

On random linear-Gaussian VAEs (issue 19's setting: d_x = 6, d_z = 3, γ = 0.2, 20 points, AIS
from the prior with 16 chains) every intermediate distribution is Gaussian, so AIS with exact
("perfect") transitions is available as the best any kernel can do on a schedule
(``benchmarks/ais_reference.py``).

* quality: mean |error| of ``ais_log_likelihood`` (nats per point, averaged over points, models
  and repetitions) with the classic kernel (one 10-step HMC trajectory per temperature) and the
  default one (ten 1-step transitions with persistent momentum), on the sigmoid schedule, next to
  perfect transitions on the same schedule; and the adaptive schedule;
* throughput: wall time of ``ais_log_likelihood`` over that of the same HMC-AIS algorithm written
  by hand in plain torch (same chains, temperatures, leapfrog steps, transitions and adaptation),
  interleaved rounds, median of the per-round ratios, one thread.

    python benchmarks/ais.py [--out results/ais.json] [--smoke]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import pyro
import torch

from pyro_vsm.evaluation import AISOptions, ais_log_likelihood, annealing_schedule

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling ais_reference.py
from ais_reference import make_problem, perfect_ais, plain_hmc_ais  # noqa: E402

KERNELS = {
    # today's default: ten 1-step transitions per temperature, momentum persistence 0.8
    "default": {},
    # one 10-step trajectory per temperature, fresh momentum, jittered step (the former default)
    "classic": {"num_leapfrog": 10},
}
PLAIN = {
    "default": dict(num_leapfrog=1, steps_per_temperature=10, persistence=0.8, jitter=0.0),
    "classic": dict(num_leapfrog=10, steps_per_temperature=1, persistence=0.0, jitter=0.5),
}


def quality(seeds, reps, temperatures, chains, perfect_reps):
    rows = []
    problems = [make_problem(seed) for seed in seeds]
    settings = [(k, "sigmoid") for k in KERNELS] + [("default", "adaptive")]
    for kernel, schedule in settings:
        errors = []
        for seed, (lg, x, exact) in zip(seeds, problems, strict=True):
            for rep in range(reps):
                pyro.set_rng_seed(1000 * seed + rep)
                options = AISOptions(
                    num_temperatures=temperatures,
                    num_chains=chains,
                    schedule=schedule,
                    **KERNELS[kernel],
                )
                est = ais_log_likelihood(lg.model, x, options=options, progress=False)
                errors.append((est - exact).abs().mean().item())
        rows.append(
            dict(kernel=kernel, schedule=schedule, mean_abs_error=sum(errors) / len(errors))
        )
    errors = []
    for seed, (lg, x, exact) in zip(seeds, problems, strict=True):
        g = torch.Generator().manual_seed(seed)
        betas = annealing_schedule(temperatures, dtype=x.dtype)
        for _ in range(perfect_reps):
            errors.append((perfect_ais(lg, x, betas, chains, g) - exact).abs().mean().item())
    perfect = sum(errors) / len(errors)
    rows.append(dict(kernel="perfect", schedule="sigmoid", mean_abs_error=perfect))
    for r in rows:
        r["ratio_to_perfect_sigmoid"] = r["mean_abs_error"] / perfect
    return rows


def throughput(temperatures, chains, rounds):
    lg, x, _ = make_problem(0)
    betas = annealing_schedule(temperatures, dtype=x.dtype)
    cases = {
        "default": ("default", AISOptions(schedule="sigmoid")),
        "default_adaptive": ("default", AISOptions(schedule="adaptive")),
        "default_eager": ("default", AISOptions(schedule="sigmoid", compile=False)),
        "classic": ("classic", AISOptions(schedule="sigmoid", num_leapfrog=10)),
    }
    times = {name: [] for name in cases}
    times.update({f"plain_{k}": [] for k in PLAIN})
    for _ in range(rounds):
        for name, (_, options) in cases.items():
            options = options.replace(num_temperatures=temperatures, num_chains=chains)
            start = time.perf_counter()
            ais_log_likelihood(lg.model, x, options=options, progress=False)
            times[name].append(time.perf_counter() - start)
        for kernel, kw in PLAIN.items():
            start = time.perf_counter()
            plain_hmc_ais(lg, x, betas, chains, **kw)
            times[f"plain_{kernel}"].append(time.perf_counter() - start)
    result = {}
    for name, (kernel, _) in cases.items():
        ratios = [a / b for a, b in zip(times[name], times[f"plain_{kernel}"], strict=True)]
        result[name] = dict(
            median_ratio=statistics.median(ratios),
            median_seconds=statistics.median(times[name]),
            reference_median_seconds=statistics.median(times[f"plain_{kernel}"]),
        )
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--temperatures", type=int, default=500)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--perfect-reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="results/ais.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.reps, args.temperatures, args.chains = 1, 1, 10, 4
        args.perfect_reps, args.rounds = 1, 1
    torch.set_num_threads(1)
    result = {
        "device": f"{platform.machine()} CPU, {os.cpu_count()} cores, one thread",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "setting": dict(
            data_dim=6,
            latent_dim=3,
            gamma=0.2,
            points=20,
            chains=args.chains,
            num_temperatures=args.temperatures,
            seeds=args.seeds,
            reps=args.reps,
        ),
        "quality": quality(
            list(range(args.seeds)), args.reps, args.temperatures, args.chains, args.perfect_reps
        ),
        "throughput": throughput(args.temperatures, args.chains, args.rounds),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"AIS from the prior, T = {args.temperatures}, {args.chains} chains, {args.seeds} models")
    for r in result["quality"]:
        print(
            f"{r['kernel']:<9}{r['schedule']:<10} mean |error| {r['mean_abs_error']:.4f}"
            f"  ({r['ratio_to_perfect_sigmoid']:.2f}x perfect on the sigmoid)"
        )
    for name, r in result["throughput"].items():
        print(
            f"{name:<17} {r['median_seconds']:7.2f} s, {r['median_ratio']:.2f}x the plain-torch "
            f"loop ({r['reference_median_seconds']:.2f} s)"
        )
    return result


if __name__ == "__main__":
    main()
