r"""Table 2 of Wang et al. (2020) at digits scale: hyperspherical and Euclidean Wasserstein
auto-encoders trained with a GAN, with minimum-velocity learning, and with the MMD.

Section 6.2.2 of "A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models": WAEs
with a deterministic encoder (:class:`~pyro_vsm.guides.ImplicitEncoder` with ``noise_dim=0``,
normalised onto :math:`S^8` or in :math:`\mathbb R^8`), a Bernoulli decoder
(:class:`~pyro_vsm.models.SphericalVAE` on :math:`z\sqrt 9` with the uniform prior, or
:class:`~pyro_vsm.models.EuclideanVAE` with :math:`\mathcal N(0, I_8)`), the cross-entropy as the
reconstruction cost and :math:`\lambda = 10`, trained by

* ``WAE-GAN``: :class:`~pyro_vsm.AAELoss` with the ``Delta`` guide (a code discriminator
  between codes and prior draws, the non-saturating encoder loss, all groups updated in each
  step, reconstruction weight :math:`1/\lambda`);
* ``WAE-MVL``: :class:`~pyro_vsm.ImplicitWAELoss`, :math:`\lambda\,\mathrm{KL}[q(z)\|p(z)]` with
  the entropy of the aggregate posterior from a marginal energy :math:`\langle h(z), z\rangle`
  fitted by (Riemannian) minimum-velocity learning;
* ``WAE-MMD``: :class:`~pyro_vsm.MMDWAELoss`, :math:`100\lambda\,\widehat{\mathrm{MMD}}{}^2`
  (Gaussian kernel, median heuristic; the weight of the reference code).

Data: scikit-learn's 8×8 digits thresholded at 1/2 (:func:`~pyro_vsm.datasets.load_digits`,
1437 training and 360 test images). The paper reports FID on MNIST; without pretrained features
here, sample quality is measured by two-sample statistics between 360 model samples (binary
draws :math:`x \sim p(x|z)`, :math:`z \sim p(z)`) and the 360 held-out images: the unbiased
:math:`\mathrm{MMD}^2` with the median-heuristic Gaussian kernel and the smooth 1-NN statistic of
Djolonga & Krause (both lower is better; the k-NN statistic is a z-score, about 0 when the
samples are indistinguishable from data). ``data`` rows compare 360 training images with the
test images: the floor of both statistics. Reconstruction error: the test cross-entropy of
:math:`x` given its code (nats per image) and the squared error of the decoded probabilities.

Settings (recorded in the JSON; the paper's in brackets): MLPs with two tanh hidden layers of
``--hidden`` 128 units [256], RMSProp :math:`10^{-3}` [same], batches of 128, ``--steps`` 3000
[200 000], MVL step size :math:`10^{-3}` and energy penalty 0.02 on the :math:`J` scale [same as
:math:`10^{-5}` on :math:`10^{-3}J`], :math:`\lambda = 10` [same], three seeds [five].

Outputs in ``--out``: ``wae.json`` and ``wae.md`` (the table next to the paper's FIDs and the
CPU time).

    python examples/wae.py               # the table
    python examples/wae.py --smoke       # seconds, for the tests
"""

import argparse
import json
import math
import pathlib
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import RMSprop
from torch import nn

from pyro_vsm import AAELoss, ImplicitWAELoss, MMDWAELoss, reporting
from pyro_vsm.datasets import load_digits
from pyro_vsm.evaluation import mmd, smooth_knn_statistic
from pyro_vsm.guides import ImplicitEncoder
from pyro_vsm.models import EuclideanVAE, SphericalVAE, mlp

METHODS = ("WAE-GAN", "WAE-MVL", "WAE-MMD")
LATENTS = ("euclidean", "sphere")
#: Table 2 of the paper (MNIST FID, mean ± s.d.)
PAPER = {
    ("WAE-GAN", "euclidean"): "24.59 ± 1.16",
    ("WAE-GAN", "sphere"): "19.81 ± 1.13",
    ("WAE-MVL", "euclidean"): "23.80 ± 1.06",
    ("WAE-MVL", "sphere"): "18.36 ± 0.73",
}


def build(method, latent, args):
    hidden = (args.hidden, args.hidden)
    manifold = "sphere" if latent == "sphere" else None
    vae = SphericalVAE if manifold else EuclideanVAE
    model = vae.mlp(64, args.latent_dim, hidden=hidden)
    guide = ImplicitEncoder.mlp(64, args.latent_dim, 0, hidden=hidden, manifold=manifold)
    if method == "WAE-MVL":
        loss = ImplicitWAELoss(
            manifold=manifold, step_size=args.step_size, wae_lambda=args.wae_lambda
        )
    elif method == "WAE-MMD":
        loss = MMDWAELoss(100 * args.wae_lambda)
    else:
        discriminator = mlp(guide.coordinates, hidden, 1, nn.Tanh)
        loss = AAELoss(
            code_discriminator=discriminator,
            updates="simultaneous",
            generator_loss="non_saturating",
            encoder_reconstruction_weight=1 / args.wae_lambda,
            generator_reconstruction_weight=1 / args.wae_lambda,
        )
    return model, guide, loss


def train(model, guide, loss, x_train, args, seed):
    svi = SVI(model, guide, RMSprop({"lr": args.lr}), loss=loss)
    gen = torch.Generator().manual_seed(seed)
    n = len(x_train)
    for _ in range(args.steps):
        idx = torch.randint(n, (args.batch_size,), generator=gen)
        value = svi.step(x_train[idx], n)
        if not math.isfinite(value):
            return float("nan")
    return value / n


def sample_statistics(samples, x_test):
    return {
        "mmd": float(mmd(samples, x_test)),
        "knn": float(smooth_knn_statistic(samples, x_test)),
    }


def evaluate(model, guide, x_test):
    with torch.no_grad():
        z = guide.sample(x_test)
        likelihood = model.likelihood(z, 1)
        recon_nll = -float(likelihood.log_prob(x_test).mean())
        recon_mse = float((model.decode(z) - x_test).pow(2).sum(-1).mean())
        _, probs = model.generate(len(x_test), x_test)
        samples = torch.bernoulli(probs)
    return {"recon_nll": recon_nll, "recon_mse": recon_mse, **sample_statistics(samples, x_test)}


def run(args):
    torch.set_num_threads(1)
    x_train, x_test = load_digits()
    if args.test_points:
        x_test = x_test[: args.test_points]
    rows = []
    start, wall = time.process_time(), time.perf_counter()
    for seed in args.seeds:  # the floor: held-out images against training images
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x_train), generator=g)[: len(x_test)]
        row = {"method": "data", "latent": "—", "seed": seed}
        row.update(sample_statistics(x_train[idx], x_test))
        rows.append(row)
    for method in args.methods:
        for latent in args.latents:
            for seed in args.seeds:
                pyro.clear_param_store()
                pyro.set_rng_seed(seed)
                model, guide, loss = build(method, latent, args)
                t0 = time.process_time()
                final = train(model, guide, loss, x_train, args, seed)
                row = {"method": method, "latent": latent, "seed": seed, "final_loss": final}
                row["train_cpu_s"] = time.process_time() - t0
                if math.isfinite(final):
                    row.update(evaluate(model, guide, x_test))
                rows.append(row)
                if not args.quiet:
                    print(json.dumps(row), flush=True)
    cpu = time.process_time() - start
    args.wall_s = time.perf_counter() - wall
    metrics = ("mmd", "knn", "recon_nll", "recon_mse", "train_cpu_s")
    return rows, reporting.summarise(rows, ("method", "latent"), metrics), cpu


def report(summary, args, cpu):
    header = [
        "method",
        "latent",
        "MMD² (×1e3)",
        "smooth 1-NN",
        "test recon. NLL",
        "recon. SE",
        "paper FID (MNIST)",
    ]
    lines = []
    for s in summary:
        lines.append(
            [
                s["method"],
                s["latent"],
                reporting.format_mean(1e3 * s["mmd"], 1e3 * s["mmd_sem"], 2),
                reporting.format_mean(s["knn"], s["knn_sem"], 2),
                reporting.format_mean(s["recon_nll"], s["recon_nll_sem"], 2),
                reporting.format_mean(s["recon_mse"], s["recon_mse_sem"], 2),
                PAPER.get((s["method"], s["latent"]), "—"),
            ]
        )
    return (
        "# Wasserstein auto-encoders on 8x8 digits, n_z = "
        f"{args.latent_dim}\n\nMean ± s.e. over seeds {args.seeds}; samples vs 360 held-out "
        "images (lower is better), reconstructions of the held-out images.\n\n"
        + reporting.markdown_table(header, lines)
        + f"\nCPU time of the table: {cpu / 60:.1f} min (one thread; {args.wall_s / 60:.1f} min "
        "wall clock).\n"
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--latents", nargs="+", default=list(LATENTS), choices=LATENTS)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--wae-lambda", type=float, default=10.0)
    p.add_argument("--step-size", type=float, default=1e-3, help="MVL step size epsilon")
    p.add_argument("--test-points", type=int, default=0, help="0: the whole test set")
    p.add_argument("--out", default="wae_out")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny settings, for the tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.steps, args.hidden, args.test_points, args.quiet = [0], 3, 8, 20, True
    return args


def main(argv=None):
    args = parse_args(argv)
    rows, summary, cpu = run(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": vars(args), "runs": rows, "summary": summary, "cpu_s": cpu}
    (out / "wae.json").write_text(json.dumps(record, indent=1))
    text = report(summary, args, cpu)
    (out / "wae.md").write_text(text)
    if not args.quiet:
        print(text)


if __name__ == "__main__":
    main()
