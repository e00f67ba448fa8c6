"""Section 4.1 of "Variational inference with unnormalized priors" at small scale: VAEs with
energy-based priors on 2-D toy data and on binarised 8x8 digits.

Data sets (``--datasets``):

* the 2-D toy sets of :func:`~pyro_vsm.datasets.make_2d` (the paper uses ``8gaussians``,
  ``checkerboard`` and ``2spirals``);
* ``u1`` ... ``u4``: exact samples from Rezende & Mohamed's (2015) potentials on
  :math:`[-4, 4]^2` (:func:`~pyro_vsm.datasets.make_potential`); the table adds a ``true p(x)``
  row, the test NLL of the true density (:math:`\\mathbb E[U] + \\log Z` by quadrature), which no
  model can beat in expectation;
* ``digits``: scikit-learn's 8x8 digits (:func:`~pyro_vsm.datasets.load_digits`, the ``[digits]``
  extra), 1437 training and 360 test images of 64 binary pixels with a Bernoulli decoder, a small
  stand-in for the paper's binarised MNIST (Section 4.2). By default the images are thresholded
  (``pixel/16 > 0.5``). ``--digits-binarization dynamic`` binarises training batches afresh each
  step (Bernoulli with probability pixel/16, as the paper does for MNIST) and the test images once
  (seed 2000); but unlike MNIST's, the digits' 17 grey levels are far from binary, so stochastic
  binarisation adds about 13.7 nats of pixel noise to an NLL of about 26 nats per image and leaves
  little structure to model at this scale. NLLs are in nats per image.

Every model of one data set has the same MLP encoder/decoder; they differ in the prior and the
objective:

* ``VAE``: :math:`\\mathcal N(0, I)` prior, ``Trace_ELBO``;
* ``EVAE (IW)``: GRBM prior, :class:`~pyro_vsm.infer.ImportanceWeightedPriorLoss` (eq. 5, the
  estimator the paper shows to fail), learnable posterior variance;
* ``ECVAE (IW)``: as ``EVAE (IW)`` with the posterior standard deviation fixed to 1
  (``DiagonalNormalEncoder(fixed_scale=1.0)``), the paper's ECVAE;
* ``SSM``: GRBM prior, :class:`~pyro_vsm.infer.SSMPriorLoss` (Algorithm 1);
* ``Adv.``: GRBM prior, :class:`~pyro_vsm.infer.AdversarialPriorLoss` (Algorithm 2; an IAF
  adversary when zuko is installed, else a full-covariance Gaussian);
* ``VampPrior``: :class:`~pyro_vsm.models.VampPriorVAE`, ``Trace_ELBO``.

``--arch densenet`` replaces the MLPs by the paper's toy architecture (Section 4.1): a fully connected
DenseNet block (:class:`~pyro_vsm.models.DenseNetMLP`, ``--densenet-hidden`` 16, ``--densenet-depth``
4) with weight normalisation in encoder and decoder. ``--digits-preset table2`` sets the digits run
to Table 2's MNIST setting scaled to 64 pixels: ELU MLPs 64-256-256-128 (encoder) and
64-256-256-64 (decoder), a 64-d latent, a GRBM prior with 64 visible and 64 hidden units, Adam 1e-3
(VAE) and 2e-4 (prior), batch 64, dynamic binarisation; with 64 hidden units log Z is estimated by
AIS, so its NLLs are optimistic (a stochastic lower bound on log Z).

The 2-D sets use a 2-d latent and a GRBM with ``--hidden-units`` (8) hidden units; ``digits`` a
``--digits-latent-dim`` (8) latent and ``--digits-hidden-units`` (12) hidden units. With at most
20 hidden units the GRBM's log-partition function is exact (a sum over :math:`2^H` states), so the
test NLL (importance sampling with the guide as proposal,
:func:`~pyro_vsm.evaluation.energy_prior_log_likelihood`; a stochastic upper bound on the NLL that
tightens with ``--eval-samples``) and the true negative ELBO (:math:`-\\mathcal L_{\\text{ALB}} +
\\log Z`) involve no estimate of :math:`\\log Z`. The prior learning rate is a fifth of the
VAE's, as in the paper; the VAE learning rate is the paper's MNIST value, 1e-3, for ``digits``
and 3e-3 for the 2-D sets (the paper gives none for them; with 1e-3 a few thousand steps leave the
2-D models close to a single blurred Gaussian).

Writes ``results.json``, ``results.md`` (mean ± s.e.m. over seeds) and ``samples.png`` into
``--out``. ``samples.png`` has one row per data set: the test data, then, for each model, samples
of the first seed: :math:`x \\sim p(x|z)` with :math:`z` drawn *exactly* from the prior (the
GRBM is a mixture of :math:`2^H` Gaussians, sampled as such, not by the paper's Gibbs-Langevin
MCMC); for ``digits`` a grid of decoded images (Bernoulli means).

    python examples/energy_prior_vae.py [--datasets 8gaussians u1 digits] [--steps 3000]
    python examples/energy_prior_vae.py --smoke      # a few seconds, for the test suite
"""

import argparse
import json
import math
import os
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from pyro.optim import Adam

from pyro_vsm import reporting
from pyro_vsm.datasets import (
    DATASETS_2D,
    POTENTIALS,
    load_digits,
    make_2d,
    make_potential,
    potential_log_partition,
)
from pyro_vsm.distributions import GRBMEnergy
from pyro_vsm.evaluation import energy_prior_log_likelihood, importance_log_likelihood
from pyro_vsm.guides import DiagonalNormalEncoder, GaussianVariationalPrior
from pyro_vsm.infer import AdversarialPriorLoss, ImportanceWeightedPriorLoss, SSMPriorLoss
from pyro_vsm.models import (
    DenseNetMLP,
    EnergyPriorVAE,
    GaussianVAE,
    VampPriorVAE,
    data_plate,
    mlp,
)

MODELS = ("VAE", "EVAE (IW)", "ECVAE (IW)", "SSM", "Adv.", "VampPrior")
DATASETS = (*DATASETS_2D, *POTENTIALS, "digits")
#: Section 4.1's toy sets and potentials, plus the digits
DEFAULT_DATASETS = ("8gaussians", "checkerboard", "2spirals", "u1", "u2", "u3", "u4", "digits")
REFERENCE = "true p(x)"
DIGITS_TEST_SEED = 2000


def _have_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


class BernoulliVAE(PyroModule):
    """:math:`z \\sim \\mathcal N(0, I)`, :math:`x|z \\sim \\operatorname{Bernoulli}(\\sigma(g(z)))`
    (the ``VAE`` baseline for binary data; site names as :class:`~pyro_vsm.models.GaussianVAE`)."""

    obs = "bernoulli"

    def __init__(self, decoder, latent_dim):
        super().__init__()
        to_pyro_module_(decoder)
        self.decoder = decoder
        self.latent_dim = int(latent_dim)

    def forward(self, x, num_data=None):
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1))
            logits = self.decoder(z)
            return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


class Data:
    """One data set: tensors, observation model and network sizes."""

    def __init__(self, name, args):
        self.name = name
        self.dynamic = False
        self.reference_nll = None
        if name == "digits":
            binarization = args.digits_binarization
            if binarization == "dynamic":
                self.train, _ = load_digits(binarize=False)  # intensities in [0, 1]
                _, self.test = load_digits(binarize="stochastic", seed=DIGITS_TEST_SEED)
                self.dynamic = True
            else:
                self.train, self.test = load_digits(binarize=True)
            if args.smoke:
                self.train, self.test = self.train[: args.num_data], self.test[: args.num_test]
            self.obs, self.latent_dim = "bernoulli", args.digits_latent_dim
            self.hidden, self.hidden_units = args.digits_hidden, args.digits_hidden_units
            self.pseudo_inputs, self.batch_size = args.digits_pseudo_inputs, args.digits_batch_size
            self.steps, self.lr = args.digits_steps or args.steps, args.digits_lr
        else:
            if name in POTENTIALS:
                self.train = make_potential(name, args.num_data, seed=1000)
                self.test = make_potential(name, args.num_test, seed=2000)
                u = POTENTIALS[name](self.test.double())
                self.reference_nll = float(u.mean()) + potential_log_partition(name)
            else:
                self.train = make_2d(name, args.num_data, seed=1000)
                self.test = make_2d(name, args.num_test, seed=2000)
            self.obs, self.latent_dim = "gaussian", args.latent_dim
            self.hidden, self.hidden_units = args.hidden, args.hidden_units
            self.pseudo_inputs, self.batch_size = args.pseudo_inputs, args.batch_size
            self.steps, self.lr = args.steps, args.lr
        self.obs_dim = self.train.shape[1]

    def batch(self, idx):
        x = self.train[idx]
        return torch.bernoulli(x) if self.dynamic else x


def _adversary(latent_dim):
    try:
        import zuko  # noqa: F401
    except ImportError:
        return GaussianVariationalPrior(latent_dim)
    return None  # the loss builds an IAF


def networks(data, args):
    """``(encoder, decoder)``: MLPs (Softplus; ELU for the Table 2 preset) or DenseNet blocks."""
    d, obs_dim, hidden = data.latent_dim, data.obs_dim, tuple(data.hidden)
    if args.arch == "densenet":
        kw = dict(hidden=args.densenet_hidden, depth=args.densenet_depth)
        return DenseNetMLP(obs_dim, 2 * d, **kw), DenseNetMLP(d, obs_dim, **kw)
    act = torch.nn.ELU if data.name == "digits" and args.digits_preset == "table2" else None
    kw = {} if act is None else {"activation": act}
    return mlp(obs_dim, hidden, 2 * d, **kw), mlp(d, hidden, obs_dim, **kw)


def build(name, data, args):
    """``(model, guide, loss)`` of one configuration."""
    d, obs_dim = data.latent_dim, data.obs_dim
    encoder, decoder = networks(data, args)
    fixed = 1.0 if name == "ECVAE (IW)" else None
    guide = DiagonalNormalEncoder(encoder, d, fixed_scale=fixed)
    elbo = Trace_ELBO(num_particles=args.particles)
    if name == "VAE":
        if data.obs == "bernoulli":
            return BernoulliVAE(decoder, d), guide, elbo
        return GaussianVAE(decoder, d, (obs_dim,)), guide, elbo
    if name == "VampPrior":
        model = VampPriorVAE(decoder, guide, data.pseudo_inputs, obs=data.obs, obs_shape=(obs_dim,))
        return model, guide, elbo
    model = EnergyPriorVAE(decoder, GRBMEnergy(d, data.hidden_units), obs=data.obs)
    common = dict(num_particles=args.particles, vectorize_particles=True)
    if name == "SSM":
        loss = SSMPriorLoss(**common)
    elif name == "Adv.":
        loss = AdversarialPriorLoss(_adversary(d), **common)
    else:
        loss = ImportanceWeightedPriorLoss(args.iw_samples, vectorize_particles=True)
    return model, guide, loss


def train(name, data, args, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide, loss = build(name, data, args)
    lr, prior_lr = data.lr, data.lr * args.prior_lr_ratio
    optim = Adam(lambda param: {"lr": prior_lr if param.startswith("energy.") else lr})
    svi = SVI(model, guide, optim, loss=loss)
    n = data.train.shape[0]
    start = time.perf_counter()
    for _ in range(data.steps):
        idx = torch.randint(0, n, (data.batch_size,))
        svi.step(data.batch(idx), num_data=n)
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


@torch.no_grad()
def prior_latents(model, n):
    """``n`` exact draws from the model's prior."""
    if isinstance(model, EnergyPriorVAE):  # the GRBM is a mixture of 2^H Gaussians
        log_w, means, scale = model.energy.mixture_components()
        k = torch.distributions.Categorical(logits=log_w).sample((n,))
        return means[k] + scale * torch.randn(n, means.shape[-1], dtype=means.dtype)
    if isinstance(model, VampPriorVAE):
        return model.prior().sample((n,))
    return torch.randn(n, model.latent_dim)


@torch.no_grad()
def model_samples(model, n):
    """Draws :math:`x \\sim p(x)` (Gaussian observations) or Bernoulli means (binary ones)."""
    z = prior_latents(model, n)
    out = model.decoder(z)
    if getattr(model, "obs", "gaussian") == "bernoulli":
        return torch.sigmoid(out)
    return out + model.variance().to(out).sqrt() * torch.randn_like(out)


def run_one(dataset, name, seed, args, data=None):
    """Train and evaluate one (data set, model, seed); ``(row, samples or None)``."""
    data = data if data is not None else Data(dataset, args)
    model, guide, loss, seconds = train(name, data, args, seed)
    row = {"dataset": dataset, "model": name, "seed": seed, "train_seconds": seconds}
    row.update(evaluate(name, model, guide, loss, data.test, args))
    # beyond the GRBM's exact limit log Z comes from AIS: a stochastic lower bound
    row["log_z_ais"] = isinstance(model, EnergyPriorVAE) and data.hidden_units > 20
    samples = None
    # a GRBM with many hidden units has too many mixture components to sample exactly
    exact = not isinstance(model, EnergyPriorVAE) or data.hidden_units <= 20
    if seed == 0 and args.figure and exact:
        torch.manual_seed(10_000 + seed)
        num = args.num_digit_samples if data.obs == "bernoulli" else args.num_plot_samples
        samples = model_samples(model, num)
    return row, samples


def _worker(dataset, name, seed, args):
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_one(dataset, name, seed, args)


def summarise(rows):
    metrics = ("test_nll", "test_neg_elbo", "train_seconds")
    summary = reporting.summarise(rows, ("dataset", "model"), metrics, count="seeds")
    for s in summary:
        key = (s["dataset"], s["model"])
        s["log_z_ais"] = any(r.get("log_z_ais") for r in rows if (r["dataset"], r["model"]) == key)
    return summary


def _fmt(mean, sem):
    return reporting.format_mean(mean, sem)


def markdown(summary):
    lines = [
        "| data set | model | seeds | test NLL | test -ELBO | train s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        mark = " (AIS log Z: NLL optimistic)" if s["log_z_ais"] else ""
        lines.append(
            f"| {s['dataset']} | {s['model']}{mark} | {s['seeds']} "
            f"| {_fmt(s['test_nll'], s['test_nll_sem'])} "
            f"| {_fmt(s['test_neg_elbo'], s['test_neg_elbo_sem'])} "
            f"| {s['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def _image_grid(images, side=8):
    n = images.shape[0]
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = torch.full((rows * (side + 1) - 1, cols * (side + 1) - 1), 0.3)
    for i, img in enumerate(images.reshape(n, side, side)):
        r, c = divmod(i, cols)
        grid[r * (side + 1) : r * (side + 1) + side, c * (side + 1) : c * (side + 1) + side] = img
    return grid


def plot_samples(path, datasets, models, data_by_name, samples, args):
    """``samples.png``: a row per data set, the test data then each model's samples."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed ([plots] extra): no samples.png")
        return None
    cols = ["data", *models]
    fig, axes = plt.subplots(
        len(datasets), len(cols), figsize=(2.0 * len(cols), 2.0 * len(datasets)), squeeze=False
    )
    for i, dataset in enumerate(datasets):
        data = data_by_name[dataset]
        for j, col in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col, fontsize=9)
            if j == 0:
                ax.set_ylabel(dataset, fontsize=9)
            if col == "data":
                x = data.test[: args.num_digit_samples if data.obs == "bernoulli" else None]
            else:
                x = samples.get((dataset, col))
            if x is None:
                continue
            x = x.detach().float().cpu()
            if data.obs == "bernoulli":
                ax.imshow(_image_grid(x).numpy(), cmap="gray_r", vmin=0, vmax=1)
            else:
                lo, hi = data.test.min(0).values, data.test.max(0).values
                pad = 0.1 * (hi - lo)
                ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=0.5, alpha=0.4, linewidths=0)
                ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
                ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    fig.tight_layout()
    fig.savefig(path, dpi=args.dpi)
    plt.close(fig)
    return path


def run(args):
    rows, samples, data_by_name = [], {}, {}
    for dataset in args.datasets:
        data_by_name[dataset] = data = Data(dataset, args)
        if data.reference_nll is not None:
            rows.append(
                {"dataset": dataset, "model": REFERENCE, "seed": 0, "train_seconds": 0.0}
                | {"test_nll": data.reference_nll, "test_neg_elbo": float("nan"), "log_z": 0.0}
            )
    jobs = [(d, m, s) for d in args.datasets for m in args.models for s in range(args.seeds)]
    if args.jobs > 1:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = [pool.submit(_worker, d, m, s, args) for d, m, s in jobs]
            results = [f.result() for f in futures]
    else:
        results = [run_one(d, m, s, args, data_by_name[d]) for d, m, s in jobs]
    for (dataset, name, seed), (row, sample) in zip(jobs, results, strict=True):
        rows.append(row)
        if sample is not None:
            samples[(dataset, name)] = sample
        if not args.quiet:
            print(
                f"{dataset:<13}{name:<11} seed {seed}: NLL {row['test_nll']:8.3f}  "
                f"-ELBO {row['test_neg_elbo']:8.3f}  ({row['train_seconds']:.0f} s)",
                flush=True,
            )
    order = {d: i for i, d in enumerate(args.datasets)}
    model_order = {m: i for i, m in enumerate((REFERENCE, *args.models))}
    rows.sort(key=lambda r: (order[r["dataset"]], model_order[r["model"]], r["seed"]))
    return rows, samples, data_by_name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        choices=DATASETS,
        help="default: " + " ".join(DEFAULT_DATASETS) + " (digits only with scikit-learn)",
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
    p.add_argument("--digits-latent-dim", type=int, default=8)
    p.add_argument("--digits-hidden", type=int, nargs="+", default=[128, 128])
    p.add_argument("--digits-hidden-units", type=int, default=12, help="<= 20 keeps log Z exact")
    p.add_argument("--digits-pseudo-inputs", type=int, default=16)
    p.add_argument("--digits-batch-size", type=int, default=64)
    p.add_argument("--digits-steps", type=int, default=None, help="default: --steps")
    p.add_argument("--digits-lr", type=float, default=1e-3, help="VAE learning rate (digits)")
    p.add_argument("--digits-binarization", choices=("threshold", "dynamic"), default="threshold")
    p.add_argument("--digits-preset", choices=("none", "table2"), default="none")
    p.add_argument("--arch", choices=("mlp", "densenet"), default="mlp", help="encoder/decoder")
    p.add_argument("--densenet-hidden", type=int, default=16)
    p.add_argument("--densenet-depth", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3, help="VAE learning rate (2-D sets)")
    p.add_argument("--prior-lr-ratio", type=float, default=0.2, help="prior lr / VAE lr")
    p.add_argument("--eval-samples", type=int, default=500, help="importance samples per point")
    p.add_argument("--num-plot-samples", type=int, default=2000)
    p.add_argument("--num-digit-samples", type=int, default=36)
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--no-figure", dest="figure", action="store_false")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (runs in parallel)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: as is; 1 for --smoke)"
    )
    p.add_argument("--out", default="results/energy_prior_vae")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    explicit = args.datasets is not None
    if not explicit:
        args.datasets = [d for d in DEFAULT_DATASETS if d != "digits" or _have_sklearn()]
    if args.digits_preset == "table2":  # Table 2's MNIST setting at 64 pixels
        args.digits_hidden, args.digits_latent_dim, args.digits_hidden_units = [256, 256], 64, 64
        args.digits_lr, args.prior_lr_ratio, args.digits_batch_size = 1e-3, 0.2, 64
        args.digits_binarization, args.digits_pseudo_inputs = "dynamic", 16
    args.hidden, args.digits_hidden = tuple(args.hidden), tuple(args.digits_hidden)
    if args.smoke:
        if not explicit:  # one toy set, one potential and the digits
            args.datasets = [d for d in ("8gaussians", "u1", "digits") if d in args.datasets]
        else:
            args.datasets = args.datasets[:1]
        args.seeds, args.steps, args.digits_steps, args.jobs = 1, 3, 3, 1
        args.num_data, args.num_test, args.batch_size, args.eval_samples = 64, 16, 16, 10
        args.hidden, args.pseudo_inputs, args.iw_samples = (8,), 4, 2
        args.digits_hidden, args.digits_pseudo_inputs, args.digits_batch_size = (16,), 4, 16
        args.digits_hidden_units, args.num_plot_samples, args.num_digit_samples = 4, 64, 4
        args.dpi = 30
        args.threads = args.threads or 1  # tiny networks: more threads only contend
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows, samples, data_by_name = run(args)
    finally:
        torch.set_num_threads(previous_threads)
    summary = summarise(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "runs": rows, "summary": summary}, f, indent=2)
    table = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    if args.figure:
        plot_samples(
            os.path.join(args.out, "samples.png"),
            args.datasets,
            args.models,
            data_by_name,
            samples,
            args,
        )
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
