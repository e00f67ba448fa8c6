"""Section 4.1 of "Variational inference with unnormalized priors" at small scale: VAEs with
energy-based priors on 2-D toy data.

Every model has the same MLP encoder/decoder and a 2-d latent; they differ in the prior and the
objective:

* ``VAE``: :math:`\\mathcal N(0, I)` prior, ``Trace_ELBO``;
* ``EVAE (IW)``: GRBM prior, :class:`~pyro_vsm.infer.ImportanceWeightedPriorLoss` (eq. 5, the
  estimator the paper shows to fail);
* ``SSM``: GRBM prior, :class:`~pyro_vsm.infer.SSMPriorLoss` (Algorithm 1);
* ``Adv.``: GRBM prior, :class:`~pyro_vsm.infer.AdversarialPriorLoss` (Algorithm 2; an IAF
  adversary when zuko is installed, else a full-covariance Gaussian);
* ``VampPrior``: :class:`~pyro_vsm.models.VampPriorVAE`, ``Trace_ELBO``.

The GRBM has few hidden units, so its log-partition function is exact and the test NLL
(importance sampling with the guide as proposal,
:func:`~pyro_vsm.evaluation.energy_prior_log_likelihood`) and the true negative ELBO
(:math:`-\\mathcal L_{\\text{ALB}} + \\log Z`) involve no estimate of :math:`\\log Z`. The prior
learning rate is a fifth of the VAE's, as in the paper. Writes ``results.json`` and
``results.md`` (mean ± s.e.m. over seeds) into ``--out``.

    python examples/energy_prior_vae.py [--datasets 8gaussians checkerboard] [--steps 3000]
    python examples/energy_prior_vae.py --smoke      # a few seconds, for the test suite
"""

import argparse
import json
import math
import os
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm.datasets import DATASETS_2D, make_2d
from pyro_vsm.distributions import GRBMEnergy
from pyro_vsm.evaluation import energy_prior_log_likelihood, importance_log_likelihood
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.infer import AdversarialPriorLoss, ImportanceWeightedPriorLoss, SSMPriorLoss
from pyro_vsm.infer.energy_prior import GaussianVariationalPrior
from pyro_vsm.models import EnergyPriorVAE, GaussianVAE, VampPriorVAE, mlp

MODELS = ("VAE", "EVAE (IW)", "SSM", "Adv.", "VampPrior")


def _adversary(latent_dim):
    try:
        import zuko  # noqa: F401
    except ImportError:
        return GaussianVariationalPrior(latent_dim)
    return None  # the loss builds an IAF


def build(name, args):
    """``(model, guide, loss)`` of one configuration."""
    d = args.latent_dim
    decoder = mlp(d, args.hidden, 2)
    guide = DiagonalNormalEncoder.mlp(2, d, hidden=args.hidden)
    if name == "VAE":
        return GaussianVAE(decoder, d, (2,)), guide, Trace_ELBO(num_particles=args.particles)
    if name == "VampPrior":
        model = VampPriorVAE(decoder, guide, args.pseudo_inputs, obs_shape=(2,))
        return model, guide, Trace_ELBO(num_particles=args.particles)
    model = EnergyPriorVAE(decoder, GRBMEnergy(d, args.hidden_units))
    common = dict(num_particles=args.particles, vectorize_particles=True)
    if name == "SSM":
        loss = SSMPriorLoss(**common)
    elif name == "Adv.":
        loss = AdversarialPriorLoss(_adversary(d), **common)
    else:
        loss = ImportanceWeightedPriorLoss(args.iw_samples, vectorize_particles=True)
    return model, guide, loss


def train(name, x, args, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide, loss = build(name, args)
    lr, prior_lr = args.lr, args.lr * args.prior_lr_ratio
    optim = Adam(lambda param: {"lr": prior_lr if param.startswith("energy.") else lr})
    svi = SVI(model, guide, optim, loss=loss)
    n = x.shape[0]
    start = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(0, n, (args.batch_size,))
        svi.step(x[idx], num_data=n)
    return model, guide, loss, time.perf_counter() - start


def evaluate(name, model, guide, loss, x, args):
    with torch.no_grad():
        if isinstance(model, EnergyPriorVAE):
            ll, used = energy_prior_log_likelihood(
                model, guide, x, num_samples=args.eval_samples, return_log_z=True
            )
            log_z = float(used["z"])
            # -ELBO = -ALB + log Z (the ALB of the energy prior, with the exact log Z)
            neg_elbo = Trace_ELBO(num_particles=8).loss(model, guide, x) / x.shape[0] + log_z
        else:
            ll = importance_log_likelihood(model, guide, x, num_samples=args.eval_samples)
            log_z = float("nan")
            neg_elbo = Trace_ELBO(num_particles=8).loss(model, guide, x) / x.shape[0]
    return {"test_nll": -float(ll.mean()), "test_neg_elbo": neg_elbo, "log_z": log_z}


def _mean_sem(values):
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    sem = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else float("nan")
    return statistics.fmean(finite), sem


def summarise(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    out = []
    for (dataset, model), rs in groups.items():
        entry = {"dataset": dataset, "model": model, "seeds": len(rs)}
        for key in ("test_nll", "test_neg_elbo", "train_seconds"):
            entry[key], entry[key + "_sem"] = _mean_sem([r[key] for r in rs])
        out.append(entry)
    return out


def markdown(summary):
    lines = [
        "| data set | model | test NLL | test -ELBO | train s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['dataset']} | {s['model']} | {s['test_nll']:.3f} ± {s['test_nll_sem']:.3f} "
            f"| {s['test_neg_elbo']:.3f} ± {s['test_neg_elbo_sem']:.3f} "
            f"| {s['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def run(args):
    rows = []
    for dataset in args.datasets:
        x_train = make_2d(dataset, args.num_data, seed=1000)
        x_test = make_2d(dataset, args.num_test, seed=2000)
        for name in args.models:
            for seed in range(args.seeds):
                model, guide, loss, seconds = train(name, x_train, args, seed)
                row = {"dataset": dataset, "model": name, "seed": seed, "train_seconds": seconds}
                row.update(evaluate(name, model, guide, loss, x_test, args))
                rows.append(row)
                if not args.quiet:
                    print(
                        f"{dataset:<13}{name:<11} seed {seed}: NLL {row['test_nll']:7.3f}  "
                        f"-ELBO {row['test_neg_elbo']:7.3f}  ({seconds:.0f} s)",
                        flush=True,
                    )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets",
        nargs="+",
        default=["8gaussians", "checkerboard", "2spirals"],
        choices=sorted(DATASETS_2D),
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--hidden-units", type=int, default=8, help="GRBM hidden units (exact log Z)")
    p.add_argument("--pseudo-inputs", type=int, default=128, help="VampPrior components")
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--iw-samples", type=int, default=16, help="K of the IW estimator")
    p.add_argument("--num-data", type=int, default=5000)
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--prior-lr-ratio", type=float, default=0.2, help="prior lr / VAE lr")
    p.add_argument("--eval-samples", type=int, default=500, help="importance samples per point")
    p.add_argument("--out", default="results/energy_prior_vae")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    args.hidden = tuple(args.hidden)
    if args.smoke:
        args.datasets, args.seeds, args.steps = args.datasets[:1], 1, 3
        args.num_data, args.num_test, args.batch_size, args.eval_samples = 64, 16, 16, 10
        args.hidden, args.pseudo_inputs, args.iw_samples = (8,), 4, 2
    rows = run(args)
    summary = summarise(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "runs": rows, "summary": summary}, f, indent=2)
    table = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
