"""Section 5.2 and Appendix B.2 of Wenliang (2022) at digits scale: every objective combination on
images, with ConvNets and with ResNets.

A Gaussian VAE on scikit-learn's 8x8 digits (1437 training and 360 test images, intensities in
[0, 1], Gaussian noise of sd 0.1 added as in the paper: afresh to every training batch, once to the
test set) is trained by the paper's seven combinations, KL-ELBO (``Trace_ELBO``), KL-M1, KL-M2,
KL-M3, Fisher-M1, Fisher-M2 and Fisher-M3 (``pyro_vsm.experiments.make_objective``), for each of two
architectures (``--archs``):

* ``conv``: the DCGAN-style :class:`~pyro_vsm.models.ConvEncoder`/``ConvDecoder`` sized for 8x8
  images (two stride-2 (de)convolutions; needs their ``image_size`` argument);
* ``resnet``: :class:`~pyro_vsm.models.ResNetEncoder`/``ResNetDecoder`` (one basic block per
  resolution 8 → 4 → 2), a small stand-in for the paper's ResNet18.

Test metrics (``pyro_vsm.evaluation``), as Appendix B.2 defines them: the negative ELBO (5 guide
samples), the reconstruction MSE (decode the guide's mean), the aggregate-posterior MMD (one
``z ~ q(z|x)`` per test image against as many prior draws, unbiased MMD² with the cubic kernel)
and the posterior Fisher divergence (5 guide samples). Sample quality, which the paper measures by
FID/KID, has no Inception network here: ``sample_mmd`` is a pixel-space stand-in, the cubic-kernel
MMD² (the KID's kernel, on pixels instead of Inception features) between model samples and the
noisy test images. Posterior standard deviations per latent dimension on the test set give the
histograms of Figures 9-10 (``posterior_sd.png``).

With ``--binary`` (needs :class:`~pyro_vsm.models.BinaryLatentVAE`) a VAE with binary latents
``z in {0,1}^30`` (relaxed Bernoulli guide) is trained with KL-ELBO and KL-M1 on the ResNet arm, and
``binary_means.png`` shows the histogram of its posterior means (Figure 11: many dimensions at 0.5
are unused).

Writes ``results.json``, ``results.md`` (mean ± s.e.m. over seeds), ``posterior_sd.png`` and
``binary_means.png`` into ``--out``.

The defaults (3 seeds, 600 model updates per run, i.e. about 42 epochs, Adam 2e-3, S = 2, J = 1,
16-d latent, width 16) took about 8 min (conv) and 20 min (resnet) of training on one shared CPU
thread; the paper trains for 1000 epochs with Adam 1e-4, S = J = 5 (ConvNets) and a 100-d latent.

``--binary`` with the defaults gives, as mean over 3 seeds (−ELBO / recon. MSE / posterior FD /
sample MMD², conv then resnet): KL-ELBO −10.1 / .025 / 30 / .0011 and −8.9 / .031 / 51 / .0025; KL-M1 −10.5 / .025 / 34 / .0044
and −1.2 ± 4.3 / .038 / 66 / .050 (one of three resnet seeds degrades); KL-M2 −6.1 / .035 / 13 /
.0028 and −4.4 / .039 / 22 / .0029; KL-M3 −6.6 / .022 / 175 / .044 and +31 / .075 / 1800 / 1.5e4;
Fisher-M1 −9.0 / .027 / 47 / .011 and −4.6 / .038 / 41 / .0037. Share of latent dimensions whose
posterior SD exceeds 0.9 (unused): ELBO .25/.40, M1 .24/.38, M2 .50/.62, Fisher-M2 .62/.70,
M3 0/0; the SD histograms are bimodal (used dimensions at 0.2–0.4, unused at 1), which they are not
after 200 updates. The binary-latent VAE's posterior means spread over (0.05, 0.95), none near 0.5.

    python examples/image_objectives.py [--archs conv resnet] [--seeds 3] [--steps 600] [--binary]
    python examples/image_objectives.py --smoke      # a few seconds, for the test suite
"""

import argparse
import inspect
import json
import math
import os
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm import M1Loss, NonFiniteLossError, reporting
from pyro_vsm import models as vsm_models
from pyro_vsm.datasets import load_digits
from pyro_vsm.evaluation import (
    mmd,
    negative_elbo,
    posterior_fisher_divergence,
    reconstruction_mse,
)
from pyro_vsm.experiments import make_objective
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import GaussianVAE, ResNetDecoder, ResNetEncoder

#: (label, objective name of make_objective), in the paper's order
OBJECTIVES = (
    ("KL-ELBO", "elbo"),
    ("KL-M1", "m1-kl"),
    ("KL-M2", "m2-kl"),
    ("KL-M3", "m3-kl"),
    ("Fisher-M1", "m1-fisher"),
    ("Fisher-M2", "m2-fisher"),
    ("Fisher-M3", "m3-fisher"),
)
METRICS = ("neg_elbo", "mse", "latent_mmd", "posterior_fd", "sample_mmd", "gamma")
SIDE = 8


def conv_available():
    """The ConvNets take an ``image_size`` (8x8 images) once the main job's networks are merged."""
    return "image_size" in inspect.signature(vsm_models.ConvEncoder).parameters


def binary_available():
    return hasattr(vsm_models, "BinaryLatentVAE")


def networks(arch, latent_out, latent_in, width):
    """``(encoder, decoder)`` of one architecture for 1x8x8 images."""
    if arch == "resnet":
        return (
            ResNetEncoder(latent_out, 1, width, SIDE),
            ResNetDecoder(latent_in, 1, width, SIDE),
        )
    return (
        vsm_models.ConvEncoder(latent_out, 1, width, image_size=SIDE),
        vsm_models.ConvDecoder(latent_in, 1, width, image_size=SIDE),
    )


def load(args):
    train, test = load_digits(binarize=False)
    if args.smoke:
        train, test = train[: args.num_data], test[: args.num_test]
    g = torch.Generator().manual_seed(2000)
    test = test + args.noise * torch.randn(test.shape, generator=g)
    return train.reshape(-1, 1, SIDE, SIDE), test.reshape(-1, 1, SIDE, SIDE)


def train(model, guide, loss, x_train, args, seed, svi_steps=None):
    svi = SVI(model, guide, Adam({"lr": args.lr}), loss=loss)
    n = x_train.shape[0]
    start = time.perf_counter()
    for _ in range(svi_steps or args.steps):
        x = x_train[torch.randint(n, (args.batch_size,))]
        svi.step(x + args.noise * torch.randn_like(x), num_data=n)
    return time.perf_counter() - start


@torch.no_grad()
def model_samples(model, n):
    z = torch.randn(n, model.latent_dim)
    loc = model.decoder(z)
    return loc + model.variance().sqrt() * torch.randn_like(loc)


def evaluate(model, guide, x, args):
    q = guide.distribution(x)
    z = q.sample()
    prior = torch.randn_like(z)
    flat = x.reshape(x.shape[0], -1)
    return {
        "neg_elbo": negative_elbo(model, guide, x, num_samples=5).mean().item(),
        "mse": reconstruction_mse(model, guide, x).mean().item(),
        "latent_mmd": mmd(z, prior, kernel="cubic").item(),
        "posterior_fd": posterior_fisher_divergence(model, guide, x, num_samples=5).mean().item(),
        "sample_mmd": mmd(
            model_samples(model, x.shape[0]).reshape(x.shape[0], -1), flat, kernel="cubic"
        ).item(),
        "gamma": model.variance().item(),
    }, q.base_dist.scale.detach()


def run_one(arch, label, name, seed, x_train, x_test, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    d = args.latent_dim
    encoder, decoder = networks(arch, 2 * d, d, args.width)
    model = GaussianVAE(decoder, d, (1, SIDE, SIDE), gamma_init=args.gamma_init)
    guide = DiagonalNormalEncoder(encoder, d)
    loss = make_objective(name, particles=args.particles, guide_steps=args.guide_steps)
    row = {"arch": arch, "objective": label, "seed": seed}
    # every objective gets --steps model updates: the score objectives alternate J guide-only
    # steps with one model step, Trace_ELBO updates both at every step
    svi_steps = args.steps if name == "elbo" else args.steps * (args.guide_steps + 1)
    try:
        row["train_seconds"] = train(model, guide, loss, x_train, args, seed, svi_steps)
    except (NonFiniteLossError, ValueError) as e:
        row.update({k: math.nan for k in METRICS}, diverged=str(e)[:200])
        return row, None
    metrics, sd = evaluate(model, guide, x_test, args)
    row.update(metrics)
    return row, sd


def run_binary(x_train, x_test, args):
    """KL-ELBO and KL-M1 on a binary-latent VAE (ResNet networks); rows and posterior means."""
    from pyro_vsm.guides import BernoulliEncoder

    rows, means = [], {}
    for label, loss in (
        ("KL-ELBO", Trace_ELBO(num_particles=args.particles, vectorize_particles=True)),
        ("KL-M1", M1Loss(num_particles=args.particles, vectorize_particles=True)),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        encoder, decoder = networks("resnet", args.binary_dim, args.binary_dim, args.width)
        model = vsm_models.BinaryLatentVAE(
            decoder, args.binary_dim, (1, SIDE, SIDE), gamma_init=args.gamma_init
        )
        guide = BernoulliEncoder(encoder, args.binary_dim)
        steps = args.steps if label == "KL-ELBO" else args.steps * 2
        seconds = train(model, guide, loss, x_train, args, 0, steps)
        model.relaxed = guide.relaxed = False
        with torch.no_grad():
            means[label] = guide.distribution(x_test).mean.detach()
        rows.append(
            {
                "objective": label,
                "neg_elbo": negative_elbo(model, guide, x_test, num_samples=5).mean().item(),
                "mse": reconstruction_mse(model, guide, x_test).mean().item(),
                "gamma": model.variance().item(),
                "train_seconds": seconds,
            }
        )
    return rows, means


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sd(path, sds, archs):
    """Figures 9-10: per-dimension histograms of the posterior SD (pale) and their mean (black)."""
    plt = _plt()
    labels = [lab for lab, _ in OBJECTIVES]
    fig, axes = plt.subplots(
        len(archs), len(labels), figsize=(2.2 * len(labels), 2.0 * len(archs)), squeeze=False
    )
    bins = torch.linspace(0, 1.2, 25)
    for i, arch in enumerate(archs):
        for j, label in enumerate(labels):
            ax = axes[i, j]
            sd = sds.get((arch, label))
            if i == 0:
                ax.set_title(label, fontsize=8)
            if j == 0:
                ax.set_ylabel(arch, fontsize=8)
            if sd is None:
                continue
            sd = sd.clamp(max=1.2)
            hists = torch.stack(
                [torch.histogram(sd[:, k], bins=bins)[0] for k in range(sd.shape[1])]
            )
            hists = hists / sd.shape[0]
            centres = 0.5 * (bins[1:] + bins[:-1])
            for h in hists:
                ax.plot(centres.numpy(), h.numpy(), color="C0", alpha=0.25, lw=0.7)
            ax.plot(centres.numpy(), hists.mean(0).numpy(), color="k", lw=1.2)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_binary(path, means):
    plt = _plt()
    fig, axes = plt.subplots(1, len(means), figsize=(3 * len(means), 2.4), squeeze=False)
    for ax, (label, m) in zip(axes[0], means.items(), strict=True):
        ax.hist(m.flatten().numpy(), bins=20, range=(0, 1), color="C0")
        ax.set_title(f"binary z, {label}: q means", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sd_summary(sd):
    """Share of (point, dimension) posterior SDs below 0.1 and above 0.9, and of active
    dimensions (mean SD < 0.5)."""
    return {
        "sd_below_0.1": (sd < 0.1).double().mean().item(),
        "sd_above_0.9": (sd > 0.9).double().mean().item(),
        "active_dims": int((sd.mean(0) < 0.5).sum()),
    }


def markdown(summary, binary_rows):
    header = ["arch", "objective", "seeds", "-ELBO", "recon. MSE", "latent MMD (cubic)"]
    header += ["posterior FD", "sample MMD (pixels)", "γ", "diverged"]
    rows = []
    for s in summary:
        rows.append(
            [s["arch"], s["objective"], s["seeds"]]
            + [reporting.format_mean(s[m], s[m + "_sem"], 4) for m in METRICS[:5]]
            + [reporting.format_mean(s["gamma"], s["gamma_sem"], 4), s["diverged"]]
        )
    out = reporting.markdown_table(header, rows)
    if binary_rows:
        out += "\n\nBinary latents (ResNet, z in {0,1}^d, one seed):\n\n"
        out += reporting.markdown_table(
            ["objective", "-ELBO", "recon. MSE", "γ", "unused dims (mean q within 0.1 of 0.5)"],
            [
                [r["objective"], f"{r['neg_elbo']:.3f}", f"{r['mse']:.4f}", f"{r['gamma']:.4f}"]
                + [r["unused_dims"]]
                for r in binary_rows
            ],
        )
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["conv", "resnet"], choices=["conv", "resnet"])
    p.add_argument("--objectives", nargs="+", default=[lab for lab, _ in OBJECTIVES])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ..."
    )
    p.add_argument("--steps", type=int, default=600, help="model updates per run")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--width", type=int, default=16, help="channels of the networks")
    p.add_argument("--particles", type=int, default=2, help="S (M2 and M3 need >= 2)")
    p.add_argument("--guide-steps", type=int, default=1, help="J guide updates per model update")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--noise", type=float, default=0.1, help="sd of the noise added to images")
    p.add_argument("--gamma-init", type=float, default=0.05)
    p.add_argument("--binary", action="store_true", help="also the binary-latent VAE")
    p.add_argument("--binary-dim", type=int, default=30)
    p.add_argument("--num-data", type=int, default=64, help="--smoke only")
    p.add_argument("--num-test", type=int, default=32, help="--smoke only")
    p.add_argument("--out", default="results/image_objectives")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    unknown = set(args.objectives) - {lab for lab, _ in OBJECTIVES}
    if unknown:
        p.error(f"unknown objectives {sorted(unknown)}")
    if args.smoke:
        args.seeds, args.steps, args.latent_dim, args.width, args.batch_size = 1, 2, 4, 4, 16
        args.objectives = ["KL-ELBO", "KL-M1", "Fisher-M3"]  # every code path, in seconds
        args.archs = args.archs[-1:]
        args.binary, args.binary_dim = binary_available(), 4
    archs = [a for a in args.archs if a != "conv" or conv_available()]
    if len(archs) < len(args.archs) and not args.quiet:
        print("ConvEncoder has no image_size (8x8 ConvNets not merged yet): conv arm skipped")
    if args.binary and not binary_available():
        print("BinaryLatentVAE not available: binary-latent VAE skipped")
        args.binary = False
    x_train, x_test = load(args)
    rows, sds = [], {}
    for arch in archs:
        for label, name in OBJECTIVES:
            if label not in args.objectives:
                continue
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                row, sd = run_one(arch, label, name, seed, x_train, x_test, args)
                if sd is not None:
                    row.update(sd_summary(sd))
                    if seed == args.first_seed:
                        sds[(arch, label)] = sd
                rows.append(row)
                if not args.quiet:
                    print(
                        f"{arch:<7}{label:<10} seed {seed}: "
                        + "  ".join(f"{m} {row[m]:.4g}" for m in METRICS)
                        + f"  ({row.get('train_seconds', math.nan):.0f} s)",
                        flush=True,
                    )
    summary = reporting.summarise(
        rows,
        ("arch", "objective"),
        METRICS + ("sd_below_0.1", "sd_above_0.9", "active_dims"),
        count="seeds",
    )
    for s in summary:
        s["diverged"] = sum(
            "diverged" in r
            for r in rows
            if (r["arch"], r["objective"]) == (s["arch"], s["objective"])
        )
    binary_rows, means = [], {}
    if args.binary:
        binary_rows, means = run_binary(x_train, x_test, args)
        for r in binary_rows:
            r["unused_dims"] = int(((means[r["objective"]] - 0.5).abs().mean(0) < 0.1).sum())
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(
            {"args": vars(args), "runs": rows, "summary": summary, "binary": binary_rows},
            f,
            indent=2,
        )
    table = markdown(summary, binary_rows)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    if sds:
        plot_sd(os.path.join(args.out, "posterior_sd.png"), sds, archs)
    if means:
        plot_binary(os.path.join(args.out, "binary_means.png"), means)
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
