"""Table 1 of Yacoby, Pan & Doshi-Velez (LiBI) at CPU scale.

Every method of the table -- VAE, β-VAE, β-VAE with KL annealing, lagging inference networks
(He et al., 2019) and LiBI -- is trained on the paper's synthetic data sets (LinearJTE, CubicJTE,
Gaussian, Mobius; 500 train / 500 validation / 500 test points each) over several restarts and
evaluated as in the paper's Appendix E:

* **Test-LL**: the average test log-likelihood by importance sampling with the learned guide as
  proposal, its variance inflated ×2, ``S = 5000`` samples per point (higher is better);
* **S-kNN**: the smooth k-NN two-sample statistic (Djolonga & Krause, 2017) between 100 fresh
  draws from the data-generating process and 100 draws from the learned model, averaged over
  repeats (the paper uses 20000 repeats; lower is better).

Setup (the paper's where it says, ours where it does not):

* likelihoods with the ground truth's architecture: θ = A of ``x|z = Cholesky(AAᵀ + B) z + ε`` for
  LinearJTE (cubed element-wise for CubicJTE) with ``B`` and the noise fixed to the truth; θ = A of
  ``x|z = zᵀA + ε`` for Gaussian; for Mobius the paper's data come from a network whose
  architecture is not given, and :func:`pyro_vsm.datasets.mobius` uses the closed-form transform,
  so the likelihood here is an MLP (2 → 50 → 50 → 2, tanh) with the true noise;
* mean-field Gaussian guides with the paper's encoders: linear for LinearJTE and Gaussian, one
  hidden layer of 50 ReLU units for Mobius, and for CubicJTE 4 units (half sigmoid, half cube
  root) then 20 ReLU units; LiBI's code network h is the guide's mean network;
* every method gets the same number of full-batch steps (``--steps``; the paper trains 30k epochs
  at learning rate 0.01) with the same optimiser, ClippedAdam (``--lr``, ``--clip-norm``), its
  learning rate decaying geometrically to ``--lr-decay`` times the initial one over the run:
  clipping keeps the exponential LiBI penalties' occasional huge gradients from stalling Adam's
  step sizes, and the decay lets the short runs resolve the very peaked likelihoods (noise
  variances down to 1e-6); ClippedAdam decays a parameter's rate only on the steps that move
  it, so LiBI's likelihood parameters (moved in about half of the steps) end at a larger rate;
* one hyper-parameter setting per method instead of the paper's grid: β = ``--beta`` for β-VAE,
  β = ``--anneal-beta`` reached after ``--anneal-frac`` of the steps for β-VAE+Anneal, He et al.'s
  rules for lagging inference networks (mutual information on the validation set), and
  ``--rounds`` rounds with equal phase lengths, ε_HZ = ``--eps-hz``, ε_Σ = ``--eps-sigma``,
  ε_μ = ``--eps-mu`` for LiBI;
* model selection as in the paper, by each method's own objective on the validation set: the
  baselines keep the checkpoint (every ``--eval-every`` steps) with the best validation
  (β-)ELBO; LiBI restores its best round by the validation ELBO;
* restart ``r`` draws fresh train/validation/test sets (seeds derived from ``r``) and a fresh
  initialisation, so "± " is the standard deviation over data sets and initialisations together.

Writes ``results.json`` (configuration, every run, the summary) and ``results.md`` (the table
next to the paper's) into ``--out``.

    python examples/libi.py --datasets linear_jte gaussian --restarts 3 --steps 3000
    python examples/libi.py --smoke      # a few seconds, for the test suite
"""

import argparse
import json
import math
import os
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from pyro.optim import ClippedAdam
from torch import nn

from pyro_vsm import reporting
from pyro_vsm.datasets import LIBI_DATASETS
from pyro_vsm.evaluation import importance_log_likelihood, smooth_knn_statistic
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.infer import BetaELBO, LaggingInferenceELBO, LiBILoss
from pyro_vsm.models import mlp

DATASETS = ("linear_jte", "cubic_jte", "gaussian", "mobius")
METHODS = ("vae", "beta_vae", "beta_vae_anneal", "lagging", "libi")
LABELS = {
    "vae": "VAE",
    "beta_vae": "β-VAE",
    "beta_vae_anneal": "β-VAE+Anneal",
    "lagging": "Lagging",
    "libi": "LiBI",
}
DATASET_LABELS = {
    "linear_jte": "LinearJTE",
    "cubic_jte": "CubicJTE",
    "gaussian": "Gaussian",
    "mobius": "Mobius",
}
#: Table 1 of the paper: (Test-LL mean, sd, S-kNN mean, sd).
PAPER = {
    "linear_jte": {
        "vae": (-3.15, 0.04, 1.62, 0.12),
        "beta_vae": (-3.15, 0.04, 1.62, 0.12),
        "beta_vae_anneal": (-3.15, 0.04, 1.63, 0.12),
        "lagging": (-3.15, 0.04, 1.62, 0.11),
        "libi": (-2.99, 0.03, 0.06, 0.05),
    },
    "cubic_jte": {
        "vae": (-5.85, 0.63, 4.86, 1.82),
        "beta_vae": (-5.47, 0.14, 2.99, 1.48),
        "beta_vae_anneal": (-12.91, 11.51, 2.86, 1.01),
        "lagging": (-30.64, 39.17, 7.07, 1.24),
        "libi": (-8.90, 3.98, 1.75, 2.75),
    },
    "gaussian": {
        "vae": (6.73, 0.23, 15.28, 7.98),
        "beta_vae": (7.65, 0.09, 4.10, 1.22),
        "beta_vae_anneal": (7.54, 0.14, 5.86, 1.66),
        "lagging": (6.94, 0.53, 15.61, 8.26),
        "libi": (7.85, 0.05, 0.10, 0.08),
    },
    "mobius": {
        "vae": (1.88, 0.05, 0.38, 0.20),
        "beta_vae": (1.92, 0.06, 0.27, 0.14),
        "beta_vae_anneal": (1.88, 0.05, 0.37, 0.19),
        "lagging": (1.90, 0.08, 0.72, 0.78),
        "libi": (1.91, 0.05, 0.17, 0.06),
    },
}


# --------------------------------------------------------------------------------------------
# models and guides


class JTEModel(PyroModule):
    """LinearJTE/CubicJTE likelihood: x | z = (Cholesky(AAᵀ + B) z)^{1 or 3} + ε, θ = A."""

    def __init__(self, B, noise_var, cubic, A0):
        super().__init__()
        self.A = PyroParam(A0)
        self.cubic = cubic
        self.register_buffer("B", B)
        self.register_buffer("noise_sd", noise_var.sqrt())

    def mean(self, z):
        h = z @ torch.linalg.cholesky(self.A @ self.A.T + self.B).T
        return h**3 if self.cubic else h

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.mean(z), self.noise_sd).to_event(1), obs=x)


class GaussianModel(PyroModule):
    """Gaussian likelihood: x | z = zᵀA + ε, θ = A (2 × 4)."""

    def __init__(self, noise_var, A0):
        super().__init__()
        self.A = PyroParam(A0)
        self.register_buffer("noise_sd", torch.tensor(noise_var).sqrt())

    def mean(self, z):
        return z @ self.A

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.mean(z), self.noise_sd).to_event(1), obs=x)


class MLPModel(PyroModule):
    """Mobius likelihood: x | z = f(z) + ε with an MLP f (the paper's f is a network too)."""

    def __init__(self, noise_var, hidden=(50, 50)):
        super().__init__()
        net = mlp(2, hidden, 2, activation=nn.Tanh)
        to_pyro_module_(net)
        self.net = net
        self.register_buffer("noise_sd", torch.tensor(noise_var).sqrt())

    def mean(self, z):
        return self.net(z)

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.mean(z), self.noise_sd).to_event(1), obs=x)


def sample_model(model, n, generator):
    """``n`` draws from the learned p_θ(x)."""
    z = torch.randn(n, 2, generator=generator)
    mean = model.mean(z)
    return mean + model.noise_sd * torch.randn(mean.shape, generator=generator)


class CubeRootSigmoid(nn.Module):
    """The CubicJTE encoder's first layer: 4 units, half sigmoid, half (smoothed) cube root."""

    def __init__(self, in_dim, units=4):
        super().__init__()
        self.linear = nn.Linear(in_dim, units)
        self.half = units // 2

    def forward(self, x):
        h = self.linear(x)
        a, b = h[..., : self.half], h[..., self.half :]
        # sign(b) |b|^(1/3), with |b| + 1e-6 so that the derivative stays finite at 0
        root = torch.sign(b) * (b.abs() + 1e-6) ** (1.0 / 3.0)
        return torch.cat([torch.sigmoid(a), root], -1)


def build(name, data):
    """``(model, guide)`` for data set ``name``, initialised from Pyro's RNG."""
    x_dim = data.x.shape[-1]
    if name in ("linear_jte", "cubic_jte"):
        model = JTEModel(
            data.params["B"],
            data.params["noise_cov"].diagonal(),
            name == "cubic_jte",
            torch.randn(2, 2),
        )
    elif name == "gaussian":
        model = GaussianModel(data.params["noise_var"], 0.5 * torch.randn(2, x_dim))
    else:
        model = MLPModel(data.params["sigma2"])
    if name == "cubic_jte":
        encoder = nn.Sequential(
            CubeRootSigmoid(x_dim), nn.Linear(4, 20), nn.ReLU(), nn.Linear(20, 4)
        )
    elif name == "mobius":
        encoder = mlp(x_dim, (50,), 4, activation=nn.ReLU)
    else:
        encoder = mlp(x_dim, (), 4)  # linear
    return model, DiagonalNormalEncoder(encoder, 2)


# --------------------------------------------------------------------------------------------
# training


def make_loss(method, args, x_val):
    """``(loss, steps, validation objective)``; the objective is higher-is-better (or None)."""
    steps = args.steps
    if method == "vae":
        return Trace_ELBO(), steps, _elbo_score(Trace_ELBO(num_particles=args.val_particles))
    if method in ("beta_vae", "beta_vae_anneal"):
        beta = args.beta if method == "beta_vae" else args.anneal_beta
        anneal = 0 if method == "beta_vae" else max(1, int(args.anneal_frac * steps))
        own = BetaELBO(beta=beta, num_particles=args.val_particles)
        return BetaELBO(beta=beta, anneal_steps=anneal), steps, _elbo_score(own)
    if method == "lagging":
        loss = LaggingInferenceELBO(criterion="mi", validation_data=x_val)
        return loss, steps, _elbo_score(Trace_ELBO(num_particles=args.val_particles))
    if method == "libi":
        phase = max(1, steps // (2 * args.rounds))
        loss = LiBILoss(
            likelihood_steps=phase,
            inference_steps=phase,
            num_rounds=args.rounds,
            eps_hz=args.eps_hz,
            eps_sigma=args.eps_sigma,
            eps_mu=args.eps_mu,
            validation_data=x_val,
            validation="elbo",
            validation_particles=args.val_particles,
        )
        return loss, loss.total_steps, None  # LiBI selects its best round itself
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _elbo_score(elbo):
    def score(model, guide, x):
        with torch.no_grad():
            return -elbo.loss(model, guide, x)

    return score


def _snapshot():
    return {n: p.detach().clone() for n, p in pyro.get_param_store().named_parameters()}


def _restore(snapshot):
    with torch.no_grad():
        for n, p in pyro.get_param_store().named_parameters():
            p.copy_(snapshot[n])


def train(method, name, splits, args, seed):
    """Trains one method on one data set; returns ``(model, guide, info)``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = build(name, splits["train"])
    x, x_val = splits["train"].x, splits["val"].x
    loss, steps, own = make_loss(method, args, x_val)
    # ClippedAdam's lrd decays a parameter's learning rate each time it is stepped: over `steps`
    # steps the rate falls to lr * lr_decay
    lrd = args.lr_decay ** (1.0 / max(1, args.steps))
    optim = ClippedAdam({"lr": args.lr, "clip_norm": args.clip_norm, "lrd": lrd})
    svi = SVI(model, guide, optim, loss=loss)
    best, start, nonfinite = None, time.perf_counter(), False
    for step in range(steps):
        value = svi.step(x)
        if not math.isfinite(value):
            nonfinite = True
            break
        if own is not None and ((step + 1) % args.eval_every == 0 or step + 1 == steps):
            score = own(model, guide, x_val)
            if best is None or score > best[0]:
                best = (score, _snapshot())
    if best is not None:
        _restore(best[1])
    info = {"train_seconds": time.perf_counter() - start, "steps": steps, "nonfinite": nonfinite}
    if method == "libi":
        info.update(best_round=loss.best_round, round_scores=loss.round_scores)
    if method == "lagging":
        info.update(switch_step=loss.switch_step)
    return model, guide, info


# --------------------------------------------------------------------------------------------
# evaluation


def evaluate(model, guide, name, splits, args, seed):
    x_test = splits["test"].x
    with torch.no_grad():
        try:
            log_px, diag = importance_log_likelihood(
                model,
                guide,
                x_test,
                num_samples=args.is_samples,
                proposal_scale=math.sqrt(2.0),
                return_diagnostics=True,
                progress=False,
            )
            test_ll = log_px.mean().item()
            khat = (diag.khat > 0.7).double().mean().item()
        except (ValueError, FloatingPointError):  # a diverged model (non-finite loss or params)
            test_ll, khat = float("nan"), float("nan")
        gen = torch.Generator().manual_seed(seed)
        knn = []
        for r in range(args.knn_repeats):
            truth = LIBI_DATASETS[name](args.knn_points, seed=10_000_000 + 1000 * seed + r).x
            fake = sample_model(model, args.knn_points, gen)
            if torch.isfinite(fake).all():
                knn.append(smooth_knn_statistic(truth, fake).item())
            else:
                knn.append(float("nan"))
    return {"test_ll": test_ll, "khat_above_0.7": khat, "sknn": statistics.fmean(knn)}


def make_splits(name, n, restart):
    make = LIBI_DATASETS[name]
    base = 1000 * (restart + 1)
    return {
        "train": make(n, seed=base),
        "val": make(n, seed=base + 1),
        "test": make(n, seed=base + 2),
    }


def run(args):
    rows = []
    for name in args.datasets:
        for restart in range(args.restarts):
            splits = make_splits(name, args.num_data, restart)
            for method in args.methods:
                model, guide, info = train(method, name, splits, args, seed=restart)
                row = {"dataset": name, "method": method, "restart": restart, **info}
                row.update(evaluate(model, guide, name, splits, args, seed=restart))
                rows.append(row)
                if not args.quiet:
                    print(
                        f"{DATASET_LABELS[name]:<10} {LABELS[method]:<13} restart {restart}: "
                        f"test LL {row['test_ll']:8.3f}  S-kNN {row['sknn']:7.3f}  "
                        f"({row['train_seconds']:.0f} s)",
                        flush=True,
                    )
    return rows


# --------------------------------------------------------------------------------------------
# report


def summarise(rows):
    out = reporting.summarise(rows, ("dataset", "method"), ("test_ll", "sknn"), spread="sd")
    for entry in out:
        entry["paper"] = PAPER[entry["dataset"]][entry["method"]]
    return out


def _fmt(mean, sd):
    return reporting.format_mean(mean, sd, digits=2, missing="n/a")


def markdown(summary, args):
    names = [n for n in args.datasets if any(s["dataset"] == n for s in summary)]
    head = "| Method | " + " | ".join(
        f"{DATASET_LABELS[n]} Test-LL | {DATASET_LABELS[n]} S-kNN" for n in names
    )
    lines = [head + " |", "| --- |" + " --- | --- |" * len(names)]
    by_key = {(s["dataset"], s["method"]): s for s in summary}
    for method in args.methods:
        ours, paper = [LABELS[method]], [f"{LABELS[method]} (paper)"]
        for n in names:
            s = by_key.get((n, method))
            if s is None:
                ours += ["", ""]
            else:
                ours += [_fmt(s["test_ll"], s["test_ll_sd"]), _fmt(s["sknn"], s["sknn_sd"])]
            p = PAPER[n][method]
            paper += [_fmt(p[0], p[1]), _fmt(p[2], p[3])]
        lines.append("| " + " | ".join(ours) + " |")
        lines.append("| " + " | ".join(paper) + " |")
    note = (
        f"\n\nOurs: mean ± sd over {args.restarts} restart(s) (fresh data and initialisation), "
        f"{args.num_data} train/validation/test points, {args.steps} full-batch steps "
        f"(ClippedAdam, lr {args.lr} decaying to {args.lr * args.lr_decay:.2g}), IS with "
        f"S = {args.is_samples} and the guide's variance "
        f"×2, S-kNN over {args.knn_repeats} repeats of {args.knn_points} vs {args.knn_points} "
        "points. Paper: Table 1 (30k epochs, 10 restarts on each of 5 data sets, best "
        "hyper-parameters of a grid)."
    )
    return "\n".join(lines) + note + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--num-data", type=int, default=500, help="points per split")
    p.add_argument("--steps", type=int, default=3000, help="full-batch steps per method")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--clip-norm", type=float, default=10.0)
    p.add_argument(
        "--lr-decay", type=float, default=0.01, help="learning-rate factor reached after --steps"
    )
    p.add_argument("--beta", type=float, default=0.5, help="β of β-VAE")
    p.add_argument("--anneal-beta", type=float, default=1.0, help="final β of β-VAE+Anneal")
    p.add_argument("--anneal-frac", type=float, default=0.5, help="share of steps to anneal over")
    p.add_argument("--rounds", type=int, default=3, help="LiBI rounds R")
    p.add_argument("--eps-hz", type=float, default=1.0)
    p.add_argument("--eps-sigma", type=float, default=0.2)
    p.add_argument("--eps-mu", type=float, default=0.2)
    p.add_argument("--eval-every", type=int, default=250, help="checkpoint interval (baselines)")
    p.add_argument("--val-particles", type=int, default=16)
    p.add_argument("--is-samples", type=int, default=5000)
    p.add_argument("--knn-repeats", type=int, default=200)
    p.add_argument("--knn-points", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest here)")
    p.add_argument("--out", default="libi_results")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny settings, a few seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.restarts, args.num_data, args.steps = 1, 60, 12
        args.rounds, args.eval_every, args.val_particles = 2, 6, 2
        args.is_samples, args.knn_repeats, args.knn_points = 50, 2, 20
        args.quiet = True
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    summary = summarise(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"config": vars(args), "runs": rows, "summary": summary}, f, indent=1)
    table = markdown(summary, args)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
