"""Accuracy and cost of the log-likelihood evaluators on a model with an exact answer.

A random linear-Gaussian VAE (``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, γI)``, guide
``q(z|x) = N(Ax + c, diag s²)`` with random, untrained A, c, s) has the exact
``log p(x) = log N(x; b, WWᵀ + γI)``. For each setting this script reports, averaged over the data
points, the signed and absolute error of the estimate (nats per point), its reported standard
error, and the wall time of the whole call:

* AIS from the prior and from the guide, versus the number of temperatures;
* importance sampling with the guide as proposal, versus the number of samples (also the share
  of points whose Pareto k̂ exceeds 0.7);
* the error-versus-cost curve of every AIS schedule (``"adaptive"``, ``"sigmoid"``, ``"linear"``)
  from the prior, averaged over random models (``--schedule-seeds``) of the setting of issue 19
  (d_x = 6, d_z = 3, γ = 0.2, 20 points, 16 chains; ``--schedule-models`` adds larger ones), next
  to AIS with exact transitions on the sigmoid schedule and on the schedule of equal
  thermodynamic length computed from the exact variances (``benchmarks/ais_reference.py``).

    python benchmarks/evaluation.py [--device cuda] [--out results/evaluation.json] [--smoke]
"""

import argparse
import json
import os
import platform
import sys
import time

import pyro
import torch

from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.evaluation import ais_log_likelihood, annealing_schedule, importance_log_likelihood

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling ais_reference.py
from ais_reference import make_problem, oracle_schedule, perfect_ais  # noqa: E402

SCHEDULES = ("adaptive", "sigmoid", "linear")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _summary(est, exact, stderr, seconds):
    err = est - exact
    return {
        "mean_error": err.mean().item(),
        "mean_abs_error": err.abs().mean().item(),
        "max_abs_error": err.abs().max().item(),
        "mean_stderr": stderr.mean().item(),
        "seconds": seconds,
    }


def run_ais(lg, x, exact, device, temperatures, chains, guide):
    rows = []
    for t in temperatures:
        pyro.set_rng_seed(0)
        _sync(device)
        start = time.perf_counter()
        est, diag = ais_log_likelihood(
            lg.model,
            x,
            guide=guide,
            num_temperatures=t,
            num_chains=chains,
            return_diagnostics=True,
            progress=False,
        )
        _sync(device)
        row = _summary(est, exact, diag.stderr, time.perf_counter() - start)
        row.update(num_temperatures=t, acceptance_rate=diag.acceptance_rate.mean().item())
        rows.append(row)
    return rows


def run_is(lg, x, exact, device, sample_counts):
    rows = []
    for s in sample_counts:
        pyro.set_rng_seed(0)
        _sync(device)
        start = time.perf_counter()
        est, diag = importance_log_likelihood(
            lg.model, lg.guide, x, num_samples=s, return_diagnostics=True, progress=False
        )
        _sync(device)
        row = _summary(est, exact, diag.stderr, time.perf_counter() - start)
        row.update(num_samples=s, khat_above_0_7=(diag.khat > 0.7).double().mean().item())
        rows.append(row)
    return rows


def run_schedules(models, seeds, temperatures, chains, perfect_reps, device):
    """Mean |error| (nats per point, averaged over points and seeds) and seconds per call of
    HMC-AIS from the prior for every schedule and number of temperatures, and of perfect AIS."""
    rows = []
    for dx, dz in models:
        problems = [make_problem(seed, dx=dx, dz=dz, device=device) for seed in seeds]
        for t in temperatures:
            for schedule in SCHEDULES:
                errors, seconds = [], []
                for seed, (lg, x, exact) in zip(seeds, problems, strict=True):
                    pyro.set_rng_seed(seed)
                    _sync(device)
                    start = time.perf_counter()
                    est = ais_log_likelihood(
                        lg.model,
                        x,
                        num_temperatures=t,
                        num_chains=chains,
                        schedule=schedule,
                        progress=False,
                    )
                    _sync(device)
                    seconds.append(time.perf_counter() - start)
                    errors.append((est - exact).abs().mean().item())
                rows.append(
                    dict(
                        data_dim=dx,
                        latent_dim=dz,
                        num_temperatures=t,
                        schedule=schedule,
                        transitions="hmc",
                        mean_abs_error=sum(errors) / len(errors),
                        seconds=sum(seconds) / len(seconds),
                    )
                )
            for name in ("sigmoid", "oracle"):
                errors = []
                for seed, (lg, x, exact) in zip(seeds, problems, strict=True):
                    g = torch.Generator(device=device).manual_seed(seed)
                    betas = (
                        annealing_schedule(t, dtype=x.dtype, device=device)
                        if name == "sigmoid"
                        else oracle_schedule(lg, x, t)
                    )
                    for _ in range(perfect_reps):
                        est = perfect_ais(lg, x, betas, chains, generator=g)
                        errors.append((est - exact).abs().mean().item())
                rows.append(
                    dict(
                        data_dim=dx,
                        latent_dim=dz,
                        num_temperatures=t,
                        schedule=name,
                        transitions="perfect",
                        mean_abs_error=sum(errors) / len(errors),
                        seconds=None,
                    )
                )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dx", type=int, default=8)
    p.add_argument("--dz", type=int, default=3)
    p.add_argument("--points", type=int, default=32)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--temperatures", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    p.add_argument("--samples", type=int, nargs="+", default=[10, 100, 1000, 10000, 100000])
    p.add_argument("--schedule-models", nargs="+", default=["6,3"], help="d_x,d_z pairs")
    p.add_argument("--schedule-seeds", type=int, default=5)
    p.add_argument(
        "--schedule-temperatures", type=int, nargs="+", default=[50, 100, 200, 500, 1000]
    )
    p.add_argument("--perfect-reps", type=int, default=20)
    p.add_argument("--out", default="results/evaluation.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.points, args.chains, args.temperatures, args.samples = 3, 4, [3, 6], [10, 50]
        args.schedule_seeds, args.schedule_temperatures, args.perfect_reps = 1, [20], 1
    device = torch.device(args.device)
    lg = LinearGaussian(dx=args.dx, dz=args.dz, seed=0, device=device)
    x = lg.sample_data(args.points)
    exact = lg.log_marginal(x)
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "setting": {
            "data_dim": args.dx,
            "latent_dim": args.dz,
            "points": args.points,
            "chains": args.chains,
            "dtype": str(x.dtype),
        },
        "ais_from_prior": run_ais(lg, x, exact, device, args.temperatures, args.chains, None),
        "ais_from_guide": run_ais(lg, x, exact, device, args.temperatures, args.chains, lg.guide),
        "importance_sampling": run_is(lg, x, exact, device, args.samples),
        "ais_schedules": run_schedules(
            [tuple(int(v) for v in m.split(",")) for m in args.schedule_models],
            list(range(args.schedule_seeds)),
            args.schedule_temperatures,
            args.chains if args.smoke else 16,
            args.perfect_reps,
            device,
        ),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"device {result['device']} ({result['device_name']}); linear-Gaussian VAE "
        f"d_x={args.dx}, d_z={args.dz}, {args.points} points; errors in nats per point"
    )
    header = f"{'method':<18}{'setting':>10}{'mean err':>10}{'mean |err|':>12}{'stderr':>9}{'s':>8}"
    print(header)
    for key, label, setting in (
        ("ais_from_prior", "AIS (prior)", "num_temperatures"),
        ("ais_from_guide", "AIS (guide)", "num_temperatures"),
        ("importance_sampling", "IS (guide)", "num_samples"),
    ):
        for r in result[key]:
            print(
                f"{label:<18}{r[setting]:>10}{r['mean_error']:>10.3f}{r['mean_abs_error']:>12.3f}"
                f"{r['mean_stderr']:>9.3f}{r['seconds']:>8.2f}"
            )
    print("AIS from the prior, mean |error| per schedule (γ = 0.2, 16 chains, 20 points, averaged")
    print(f"over {args.schedule_seeds} models); 'perfect' = exact transitions")
    for r in result["ais_schedules"]:
        secs = "" if r["seconds"] is None else f"{r['seconds']:8.2f} s"
        print(
            f"d_x={r['data_dim']:<3} d_z={r['latent_dim']:<3} T={r['num_temperatures']:<5}"
            f"{r['transitions']:>8} {r['schedule']:<9}{r['mean_abs_error']:8.4f}{secs}"
        )
    return result


if __name__ == "__main__":
    main()
