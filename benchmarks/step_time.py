"""Step time of every loss relative to Trace_ELBO on the same model.

MLP Gaussian VAE, 784-d data, 20-d latent, batch 128 (the Foundation issue's setting); the
energy-prior losses train the same VAE with a GRBM prior and are compared with Trace_ELBO on that
model (the analogous lower bound). All losses are timed in one run, interleaved over several rounds,
one torch thread; the ratio is the median step time of a loss over the median step time of its
Trace_ELBO reference. On the CPU the clock is the process's CPU time (robust to other processes
competing for the cores), on CUDA the wall clock. Writes JSON.

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

from pyro_vsm import (
    AdversarialPriorLoss,
    BetaELBO,
    ImportanceWeightedPriorLoss,
    JointFisherLoss,
    LaggingInferenceELBO,
    LiBILoss,
    M1Loss,
    M2Loss,
    M3Loss,
    SSMPriorLoss,
)
from pyro_vsm.distributions import GRBMEnergy
from pyro_vsm.guides import DiagonalNormalEncoder

try:
    from pyro_vsm.guides import GaussianVariationalPrior
except ImportError:  # checkouts before the layout change (benchmarks/compare_checkouts.py)
    from pyro_vsm.infer.energy_prior import GaussianVariationalPrior
from pyro_vsm.models import EnergyPriorVAE, GaussianVAE, mlp

LATENT = 20
KW = dict(max_plate_nesting=1)

#: name -> (model family, loss factory, name of the reference)
LOSSES = {
    "Trace_ELBO": ("vae", lambda: Trace_ELBO(**KW), "Trace_ELBO"),
    "M1Loss(kl, J=1)": ("vae", lambda: M1Loss("kl", guide_steps=1, **KW), "Trace_ELBO"),
    "M1Loss(kl, J=5, S=5)": (
        "vae",
        lambda: M1Loss("kl", guide_steps=5, num_particles=5, vectorize_particles=True, **KW),
        "Trace_ELBO",
    ),
    "M1Loss(fisher, J=1)": ("vae", lambda: M1Loss("fisher", guide_steps=1, **KW), "Trace_ELBO"),
    "M1Loss(fisher-reparam, J=1)": (
        "vae",
        lambda: M1Loss("fisher-reparam", guide_steps=1, **KW),
        "Trace_ELBO",
    ),
    "M2Loss(kl, S=2)": ("vae", lambda: M2Loss("kl", num_particles=2, **KW), "Trace_ELBO"),
    "M3Loss(kl, S=2)": ("vae", lambda: M3Loss("kl", num_particles=2, **KW), "Trace_ELBO"),
    "M3Loss(kl, S=2, K=1)": (
        "vae",
        lambda: M3Loss("kl", num_particles=2, bilevel_steps=1, **KW),
        "Trace_ELBO",
    ),
    "JointFisherLoss": ("vae", lambda: JointFisherLoss(**KW), "Trace_ELBO"),
    "BetaELBO(0.5, anneal)": ("vae", lambda: BetaELBO(0.5, anneal_steps=100, **KW), "Trace_ELBO"),
    "LaggingInferenceELBO": (
        "vae",
        lambda: LaggingInferenceELBO(inner_window=3, max_inner_steps=6, **KW),
        "Trace_ELBO",
    ),
    "LiBILoss": ("vae", lambda: LiBILoss(5, 5, 100, **KW), "Trace_ELBO"),
    "Trace_ELBO (energy prior)": ("energy", lambda: Trace_ELBO(**KW), "Trace_ELBO (energy prior)"),
    "SSMPriorLoss": ("energy", lambda: SSMPriorLoss(**KW), "Trace_ELBO (energy prior)"),
    "AdversarialPriorLoss": (
        "energy",
        lambda: AdversarialPriorLoss(GaussianVariationalPrior(LATENT), **KW),
        "Trace_ELBO (energy prior)",
    ),
    "ImportanceWeightedPriorLoss(K=2)": (
        "energy",
        lambda: ImportanceWeightedPriorLoss(num_samples=2, **KW),
        "Trace_ELBO (energy prior)",
    ),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _models(family, dim, hidden, device):
    if family == "energy":
        model = EnergyPriorVAE(mlp(LATENT, hidden, dim), GRBMEnergy(LATENT, 8))
    else:
        model = GaussianVAE.mlp(dim, LATENT, hidden=hidden)
    guide = DiagonalNormalEncoder.mlp(dim, LATENT, hidden=hidden)
    return model.to(device), guide.to(device)


def time_steps(name, x, device, steps, hidden):
    family, make, _ = LOSSES[name]
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = _models(family, x.shape[-1], hidden, device)
    svi = SVI(model, guide, Adam({"lr": 1e-4}), loss=make())
    for _ in range(4):  # warm-up: param creation, optimizer state, allocator
        svi.step(x)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    _sync(device)
    start = clock()
    for _ in range(steps):
        svi.step(x)
    _sync(device)
    return (clock() - start) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per loss per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--losses", nargs="+", default=list(LOSSES), help="subset to time")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default="results/step_time.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds, args.hidden = 2, 1, [16]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in LOSSES if n in args.losses or LOSSES[n][2] == n]
    x = torch.rand(128, 784, generator=torch.Generator().manual_seed(0)).to(device)
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(time_steps(name, x, device, args.steps, args.hidden))
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} thread(s)",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "setting": {
            "data_dim": 784,
            "latent_dim": LATENT,
            "batch": 128,
            "hidden": args.hidden,
            "steps": args.steps,
            "rounds": args.rounds,
        },
        "seconds_per_step": median,
        "reference": {k: LOSSES[k][2] for k in names},
        "ratio_to_trace_elbo": {k: median[k] / median[LOSSES[k][2]] for k in names},
    }
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    width = max(map(len, names))
    print(f"device {result['device']} ({result['device_name']}), batch 128, 784-d, 20-d latent")
    for k in names:
        print(
            f"{k:<{width}}  {median[k] * 1e3:8.2f} ms/step  "
            f"{result['ratio_to_trace_elbo'][k]:5.2f}x {LOSSES[k][2]}"
        )
    return result


if __name__ == "__main__":
    main()
