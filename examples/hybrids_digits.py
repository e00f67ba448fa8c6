"""Section 6 of Rosca, Lakshminarayanan & Mohamed (2018) at digits scale: sample quality of the
VAE, the AAE and the VAE-GAN hybrids VGH and VGH++ over learning-rate sweeps.

Every method is trained on scikit-learn's 8×8 digits, dequantised to continuous values in (0, 1)
(:func:`pyro_vsm.datasets.load_digits`, 1437 training / 360 test images), with the same MLP encoder
(diagonal Normal guide), decoder (sigmoid means) and ``--latents`` latents, over a reduced,
Table-3-shaped grid (``--grid full`` is the paper's Table 3 with the reconstruction weights of
Appendix K; the default ``reduced`` grid is listed in ``results.md``):

* **VAE** (``Trace_ELBO``; Laplace likelihood with a learnt scale): learning rate;
* **AAE** (:class:`pyro_vsm.AAELoss`; Laplace likelihood with scale 1, i.e. the paper's ℓ₁
  reconstruction, unweighted): encoder/decoder and code-discriminator learning rates;
* **VGH**, **VGH++** (:class:`pyro_vsm.VGHLoss`, Algorithm 5): encoder/generator learning rate,
  discriminators at 5e-4, reconstruction weights λ_E, λ_G.

Appendix K's optimiser: Adam with β = (0.5, 0.9), set per parameter group through
``pyro.optim.Adam``'s per-parameter callable; batch 64; every method gets ``--iterations``
iterations (one ``svi.step`` for the VAE, one cycle -- every group once, on one minibatch -- for the
hybrids). Discriminators: MLPs with three hidden layers of ``--disc-hidden`` leaky-ReLU (0.2) units.
The hybrids use ``generator_loss="non_saturating"`` (the paper's footnote 1: all its experiments
use it) unless ``--generator-loss logit``.

Samples are the decoder's means at prior draws (``--num-samples``) and are compared with the test
images by

* **classifier score**: the Inception-score formula :math:`\\exp\\mathbb E_x\\mathrm{KL}[p(y|x)\\|
  p(y)]` with a small classifier (scikit-learn MLP) trained here on the training digits' labels
  (higher is better, at most 10);
* **critic**: the negative Wasserstein distance estimated by an independently trained WGAN-GP
  critic (gradient penalty 10) on half of the test images and samples, evaluated on the other
  halves (Appendix I; higher is better);
* **MMD²** (:func:`pyro_vsm.evaluation.mmd`, RBF kernel, median heuristic; lower is better) and
  the **smooth k-NN** statistic (:func:`pyro_vsm.evaluation.smooth_knn_statistic`; lower is
  better, about 0 for indistinguishable samples);
* the test reconstruction error (mean ℓ₁ per image, decoding the posterior mean).

A reference row scores the training images themselves against the test images. The summary
gives, per method, the best run (and its hyper-parameters) and the spread over the grid.

The paper (Figures 7, 8): VGH and VGH++ give better samples than VAEs and AAEs, VGH++
consistently better than VGH, and the hybrids are more sensitive to hyper-parameters.

One run at the defaults (1293 s of CPU, 54 min on a shared 2-core machine; one seed per grid
point), best / mean ± sd over the grid:

============  ===================  ======================  =====================  ===================
method        classifier score ↑   critic ↑                MMD² ↓                 smooth k-NN ↓
============  ===================  ======================  =====================  ===================
VAE (3)       8.03 / 7.25 ± 0.69   -0.34 / -0.42 ± 0.08    0.005 / 0.007 ± 0.002  10.7 / 15.9 ± 4.6
AAE (9)       6.97 / 6.62 ± 0.42   -0.47 / -0.60 ± 0.19    0.005 / 0.017 ± 0.015  16.6 / 28.1 ± 14.8
VGH (8)       6.74 / 5.71 ± 1.04   -0.70 / -1.23 ± 0.69    0.012 / 0.060 ± 0.078  30.9 / 71.5 ± 66.3
VGH++ (8)     6.96 / 5.83 ± 1.47   -0.43 / -0.91 ± 0.51    0.003 / 0.036 ± 0.048  12.9 / 48.8 ± 46.3
training set  9.69                 0.05                    0.000                  -0.7
============  ===================  ======================  =====================  ===================

VGH++ beats VGH in best and mean on every sample metric, and the hybrids' spread over their grid
is larger on every metric (1.5 to 40 times the VAE's and AAE's standard deviation; the grids
differ, the hybrids' includes the reconstruction weights), as in the paper; but the hybrids do
not beat the VAE here
(the paper, too, finds VAEs strong on the less variable ColorMNIST and CelebA; its hybrids win on
CIFAR-10).

Writes ``results.json``, ``results.md`` and ``samples.png`` into ``--out``.

    python examples/hybrids_digits.py --out results/hybrids_digits      # about an hour on 1 core
    python examples/hybrids_digits.py --smoke                          # seconds
"""

import argparse
import itertools
import json
import math
import os
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule, PyroParam
from torch import nn
from torch.distributions import constraints

from pyro_vsm import AAELoss, NonFiniteLossError, VGHLoss, reporting
from pyro_vsm.datasets import load_digits
from pyro_vsm.evaluation import mmd, smooth_knn_statistic
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import data_plate, mlp

METHODS = ("vae", "aae", "vgh", "vgh++")
LABELS = {"vae": "VAE", "aae": "AAE", "vgh": "VGH", "vgh++": "VGH++", "data": "training data"}
#: metric -> True when higher is better
METRICS = {
    "classifier_score": True,
    "critic": True,
    "mmd2": False,
    "smooth_knn": False,
    "test_l1": False,
}
HYPER = ("lr", "code_lr", "data_lr", "lambda_e", "lambda_g")

#: Table 3 and Appendix K of the paper
FULL_GRID = {
    "vae": {"lr": (1e-3, 5e-4, 5e-3)},
    "aae": {"lr": (1e-3, 5e-4, 5e-3), "code_lr": (5e-4, 5e-5, 1e-5)},
    "vgh": {
        "lr": (1e-4, 5e-4),
        "data_lr": (5e-4,),
        "code_lr": (5e-4,),
        "lambda_e": (1.0, 5.0, 10.0, 50.0),
        "lambda_g": (1.0, 5.0, 10.0, 50.0),
    },
}
REDUCED_GRID = {
    "vae": {"lr": (1e-3, 5e-4, 5e-3)},
    "aae": {"lr": (1e-3, 5e-4, 5e-3), "code_lr": (5e-4, 5e-5, 1e-5)},
    "vgh": {
        "lr": (1e-4, 5e-4),
        "data_lr": (5e-4,),
        "code_lr": (5e-4,),
        "lambda_e": (1.0, 10.0),
        "lambda_g": (1.0, 10.0),
    },
}


class LaplaceGenerator(PyroModule):
    """p(z) = N(0, I), p(x|z) = Laplace(sigmoid(decoder(z)), b): b fixed (ℓ₁) or learnt."""

    def __init__(self, latent_dim, hidden, scale=None):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = mlp(latent_dim, (hidden, hidden), 64, activation=nn.ReLU)
        if scale is None:
            self.scale = PyroParam(torch.tensor(0.1), constraint=constraints.positive)
        else:
            self.scale = float(scale)

    def mean(self, z):
        return torch.sigmoid(self.decoder(z))

    def forward(self, x, num_data=None):
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1))
            pyro.sample("x", dist.Laplace(self.mean(z), self.scale).to_event(1), obs=x)


def discriminator(in_dim, hidden):
    act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
    return mlp(in_dim, (hidden, hidden, hidden), 1, activation=act)


def grid(method, args):
    table = (FULL_GRID if args.grid == "full" else REDUCED_GRID)[
        "vgh" if method == "vgh++" else method
    ]
    keys = list(table)
    points = [dict(zip(keys, v, strict=True)) for v in itertools.product(*table.values())]
    return points[: args.max_runs] if args.max_runs else points


def train(method, hp, x, args, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = LaplaceGenerator(args.latents, args.hidden, scale=None if method == "vae" else 1.0)
    guide = DiagonalNormalEncoder(
        mlp(64, (args.hidden, args.hidden), 2 * args.latents, activation=nn.ReLU), args.latents
    )

    def adam_args(name):
        if "code_discriminator" in name:
            lr = hp["code_lr"]
        elif "data_discriminator" in name:
            lr = hp["data_lr"]
        else:
            lr = hp["lr"]
        return {"lr": lr, "betas": (0.5, 0.9)}

    form = args.generator_loss
    if method == "vae":
        loss = Trace_ELBO()
    elif method == "aae":
        loss = AAELoss(discriminator(args.latents, args.disc_hidden), generator_loss=form)
    else:
        loss = VGHLoss(
            discriminator(64, args.disc_hidden),
            discriminator(args.latents, args.disc_hidden),
            variant=method,
            generator_loss=form,
            encoder_reconstruction_weight=hp["lambda_e"],
            generator_reconstruction_weight=hp["lambda_g"],
        )
    steps = getattr(loss, "steps_per_cycle", 1)
    svi = SVI(model, guide, pyro.optim.Adam(adam_args), loss=loss)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(args.iterations):
        batch = x[torch.randint(n, (args.batch_size,), generator=gen)]
        for _ in range(steps):
            svi.step(batch, n)
    return model, guide


class Classifier:
    """p(y|x) from a scikit-learn MLP trained on the training digits."""

    def __init__(self, x, y, x_test, y_test, max_iter, seed=0):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        self.net = MLPClassifier(hidden_layer_sizes=(128,), max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            if max_iter < 100:  # the smoke run stops early on purpose
                warnings.simplefilter("ignore", ConvergenceWarning)
            self.net.fit(x.numpy(), y.numpy())
        self.accuracy = float(self.net.score(x_test.numpy(), y_test.numpy()))

    def score(self, samples):
        p = torch.as_tensor(self.net.predict_proba(samples.numpy()), dtype=torch.float64)
        p = p.clamp_min(1e-12)
        marginal = p.mean(0, keepdim=True)
        return math.exp((p * (p.log() - marginal.log())).sum(-1).mean().item())


def critic_score(data, samples, args, seed):
    """−W from a WGAN-GP critic trained on half of each set, evaluated on the other halves."""
    gen = torch.Generator().manual_seed(seed)
    data = data[torch.randperm(len(data), generator=gen)]
    samples = samples[torch.randperm(len(samples), generator=gen)]
    d_train, d_eval = data.chunk(2)
    s_train, s_eval = samples.chunk(2)
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        critic = mlp(64, (args.disc_hidden, args.disc_hidden), 1, activation=nn.LeakyReLU)
        _train_critic(critic, d_train, s_train, args.critic_steps, gen)
    with torch.no_grad():
        return -(critic(d_eval).mean() - critic(s_eval).mean()).item()


def _train_critic(critic, d_train, s_train, steps, gen):
    opt = torch.optim.Adam(critic.parameters(), lr=5e-4, betas=(0.5, 0.9))
    for _ in range(steps):
        real = d_train[torch.randint(len(d_train), (64,), generator=gen)]
        fake = s_train[torch.randint(len(s_train), (64,), generator=gen)]
        u = torch.rand(64, 1, generator=gen)
        mix = (u * real + (1 - u) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
        penalty = (grad.norm(dim=-1) - 1).pow(2).mean()
        loss = critic(fake).mean() - critic(real).mean() + 10.0 * penalty
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def evaluate(samples, x_test, classifier, args, seed):
    n = min(len(samples), len(x_test))
    gen = torch.Generator().manual_seed(seed)
    return {
        "classifier_score": classifier.score(samples),
        "critic": critic_score(x_test, samples, args, seed),  # trains under enable_grad
        "mmd2": mmd(samples[:n], x_test[:n]).item(),
        "smooth_knn": smooth_knn_statistic(samples[:n], x_test[:n], generator=gen).item(),
    }


@torch.no_grad()
def sample(model, num, seed):
    z = torch.randn(num, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    return model.mean(z)


def run(args):
    x, x_test, y, y_test = load_digits(binarize=False, dequantize=True, return_labels=True)
    if args.smoke:
        x, y = x[:256], y[:256]
    classifier = Classifier(x, y, x_test, y_test, max_iter=50 if args.smoke else 1000)
    reference = {"method": "data", **evaluate(x, x_test, classifier, args, 0), "test_l1": 0.0}
    rows, pictures = [], {}
    for method in args.methods:
        best = None
        for i, hp in enumerate(grid(method, args)):
            start = time.perf_counter()
            row = {"method": method, "run": i, **{k: hp.get(k) for k in HYPER}}
            try:
                model, guide = train(method, hp, x, args, args.seed + i)
                samples = sample(model, args.num_samples, args.seed + i)
                if not torch.isfinite(samples).all():
                    raise NonFiniteLossError("non-finite samples")
                row.update(evaluate(samples, x_test, classifier, args, args.seed + i))
                with torch.no_grad():
                    recon = model.mean(guide.distribution(x_test).base_dist.loc)
                row["test_l1"] = (recon - x_test).abs().sum(-1).mean().item()
            except NonFiniteLossError as e:  # a diverged run counts, with NaN metrics
                row.update({m: float("nan") for m in METRICS}, error=str(e).split("\n")[0])
                samples = None
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            if samples is not None and (
                best is None or row["classifier_score"] > best[0]["classifier_score"]
            ):
                best = (row, samples[:32])
            if not args.quiet:
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
        if best is not None:
            pictures[method] = best[1]
    return {"classifier_accuracy": classifier.accuracy, "reference": reference, "runs": rows}, (
        pictures,
        x_test[:32],
    )


def summarise(result):
    rows = result["runs"]
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        entry = {"method": method, "runs": len(group)}
        entry["diverged"] = sum(1 for r in group if not math.isfinite(r["classifier_score"]))
        for metric, higher in METRICS.items():
            finite = [r for r in group if math.isfinite(r[metric])]
            mean, sd, _ = reporting.mean_spread([r[metric] for r in finite], spread="sd")
            entry[metric] = mean
            entry[f"{metric}_sd"] = sd
            if finite:
                pick = max if higher else min
                top = pick(finite, key=lambda r: r[metric])
                entry[f"{metric}_best"] = top[metric]
                entry[f"{metric}_best_run"] = top["run"]
        summary.append(entry)
    return summary


def _hp(row):
    return ", ".join(f"{k}={row[k]:g}" for k in HYPER if row.get(k) is not None)


def markdown(result, summary, args):
    ref = result["reference"]
    header = ["method", "runs (diverged)"]
    header += [f"{m} best / mean ± sd ({'↑' if up else '↓'})" for m, up in METRICS.items()]
    body = []
    for s in summary:
        cells = [LABELS[s["method"]], f"{s['runs']} ({s['diverged']})"]
        for m in METRICS:
            best = s.get(f"{m}_best", float("nan"))
            cells.append(f"{best:.3f} / {reporting.format_mean(s[m], s[f'{m}_sd'])}")
        body.append(cells)
    body.append(
        [f"{LABELS['data']} (reference)", "—"]
        + [f"{ref[m]:.3f}" if m in ref else "—" for m in METRICS]
    )
    best_lines = []
    for s in summary:
        if "classifier_score_best_run" in s:
            row = next(
                r
                for r in result["runs"]
                if r["method"] == s["method"] and r["run"] == s["classifier_score_best_run"]
            )
            best_lines.append(f"* {LABELS[s['method']]}: {_hp(row)}")
    runs_header = ["method", "hyper-parameters", *METRICS, "seconds"]
    runs_body = [
        [LABELS[r["method"]], _hp(r)]
        + [f"{r[m]:.3f}" if math.isfinite(r[m]) else "diverged" for m in METRICS]
        + [f"{r['seconds']:.0f}"]
        for r in result["runs"]
    ]
    table = FULL_GRID if args.grid == "full" else REDUCED_GRID
    grid_lines = [
        f"* {k.upper()}: " + ", ".join(f"{h} ∈ {v}" for h, v in g.items()) for k, g in table.items()
    ]
    return "\n".join(
        [
            "# VAE, AAE, VGH, VGH++ on dequantised 8×8 digits",
            "",
            f"{args.latents} latents, {args.iterations} iterations (cycles) of batch "
            f"{args.batch_size}, Adam β = (0.5, 0.9), generator loss {args.generator_loss!r}, "
            f"{args.num_samples} samples vs the 360 test images; classifier test accuracy "
            f"{result['classifier_accuracy']:.3f}. Grid ({args.grid}; VGH and VGH++ share "
            "theirs):",
            "",
            *grid_lines,
            "",
            "Per method: the best run's value and the mean ± sd over the grid (the spread is "
            "the hyper-parameter sensitivity).",
            "",
            reporting.markdown_table(header, body),
            "",
            "Best run by classifier score:",
            "",
            *best_lines,
            "",
            "The paper (Section 6, Figures 7 and 8): VGH and VGH++ give better samples than VAEs "
            "and AAEs, VGH++ consistently outperforms VGH, and the hybrids are more sensitive to "
            "hyper-parameters.",
            "",
            "## Every run",
            "",
            reporting.markdown_table(runs_header, runs_body),
            "",
        ]
    )


def figure(pictures, data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("test data", data)] + [(LABELS[m], s) for m, s in pictures.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    for ax, (title, images) in zip(axes, panels, strict=True):
        grid_img = images[:32].reshape(4, 8, 8, 8).permute(0, 2, 1, 3).reshape(32, 64)
        ax.imshow(grid_img.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--grid", default="reduced", choices=("reduced", "full"))
    p.add_argument("--latents", type=int, default=10)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--disc-hidden", type=int, default=256)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--generator-loss", default="non_saturating", choices=("logit", "non_saturating")
    )
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--critic-steps", type=int, default=1000)
    p.add_argument("--max-runs", type=int, default=0, help="first runs of each grid (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="results/hybrids_digits")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.latents, args.hidden, args.disc_hidden = 4, 16, 16
        args.iterations, args.num_samples, args.critic_steps, args.quiet = 2, 64, 5, True
        args.max_runs = 2
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result, (pictures, data) = run(args)
    summary = summarise(result)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(
            {
                "config": vars(args),
                **result,
                "summary": summary,
                "seconds": time.perf_counter() - start,
            },
            f,
            indent=1,
        )
    table = markdown(result, summary, args)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    figure(pictures, data, os.path.join(args.out, "samples.png"))
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
