r"""Table 1 of Wang et al. (2020) at digits scale: explicit vs implicit encoders, Euclidean vs
hyperspherical latents.

Section 6.2.1 of "A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models": VAEs
on binarised images with

* ``explicit``: a diagonal Gaussian encoder (Euclidean, :class:`~pyro_vsm.guides.DiagonalNormalEncoder`)
  or a von Mises--Fisher encoder (sphere, :class:`~pyro_vsm.guides.VonMisesFisherEncoder`),
  trained with ``Trace_ELBO``;
* ``implicit``: :math:`z = f([x, \varepsilon])` (normalised onto the sphere,
  :class:`~pyro_vsm.guides.ImplicitEncoder`, :math:`\varepsilon \in \mathbb R^8`), trained with
  :class:`~pyro_vsm.ImplicitELBO`: the entropy gradient from a conditional energy
  :math:`\langle h([z, x]), z\rangle` fitted by (Riemannian) minimum-velocity learning,
  :math:`\epsilon = 10^{-3}`;

and a uniform prior on :math:`S^{n_z}` (:class:`~pyro_vsm.models.SphericalVAE`, decoder on
:math:`z\sqrt{n_z+1}`) or :math:`\mathcal N(0, I_{n_z})` (:class:`~pyro_vsm.models.EuclideanVAE`),
Bernoulli decoders. Data: scikit-learn's 8×8 digits thresholded at 1/2
(:func:`~pyro_vsm.datasets.load_digits`: 1437 training and 360 test images of 64 pixels), a small
stand-in for binarised MNIST. Test NLL (nats per image) by AIS from the prior for every model
(:func:`~pyro_vsm.evaluation.ais_log_likelihood`, which moves sphere latents through the exact
Gaussian augmentation) and by importance sampling with the guide for the explicit ones; mean ±
s.e. over seeds. AIS and IS estimates of :math:`\log p(x)` are stochastic lower bounds, so the
NLLs are stochastic upper bounds; where both exist, their difference shows AIS's bias.

Settings (all recorded in the JSON; the paper's in brackets): encoder, decoder and energy MLPs
with two tanh hidden layers of ``--hidden`` 128 units [256], RMSProp with learning rate
:math:`10^{-3}` [same], batches of 128 [same], ``--steps`` 1500 [100 000], energy penalty 0.2 on
the :math:`J` scale [:math:`10^{-4}` on :math:`\epsilon J`], simultaneous updates [one
autoencoder step, then one energy step], AIS with 100 temperatures on the adaptive schedule, 8
chains and two HMC transitions of 5 leapfrog steps per temperature [1000 temperatures, 16
chains], IS with 1000 samples. The step and AIS budgets are cut to keep the table under an hour
on a shared CPU. Here :math:`n_z \in \{2,
8\}` ([8, 32] on MNIST): :math:`S^2` and :math:`S^8` against :math:`\mathbb R^2` and
:math:`\mathbb R^8`.

The paper's ordering on MNIST: implicit < explicit and spherical < Euclidean (except explicit at
:math:`n_z = 32`). Numbers measured at this scale are in the module docstring's table below
after a run; see the issue note for the last full run.

Outputs in ``--out``: ``implicit_vae.json`` (every run and the summary) and ``implicit_vae.md``
(the table next to the paper's numbers, the ordering checks and the CPU time).

    python examples/implicit_vae.py                 # the table (about 20 min of CPU)
    python examples/implicit_vae.py --smoke         # seconds, for the tests
"""

import argparse
import json
import math
import pathlib
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import RMSprop
from torch import nn

from pyro_vsm import ImplicitELBO, reporting
from pyro_vsm.datasets import load_digits
from pyro_vsm.evaluation import ais_log_likelihood, importance_log_likelihood
from pyro_vsm.guides import DiagonalNormalEncoder, ImplicitEncoder, VonMisesFisherEncoder
from pyro_vsm.models import EuclideanVAE, SphericalVAE, mlp

ENCODERS = ("explicit", "implicit")
LATENTS = ("euclidean", "sphere")
#: Table 1 of the paper (MNIST, NLL in nats, mean ± s.d. over 10 runs)
PAPER = {
    (8, "explicit", "euclidean"): "96.45 ± 0.10",
    (8, "explicit", "sphere"): "95.47 ± 0.08",
    (8, "implicit", "euclidean"): "95.84 ± 0.19",
    (8, "implicit", "sphere"): "94.72 ± 0.16",
    (32, "explicit", "euclidean"): "90.28 ± 0.37",
    (32, "explicit", "sphere"): "91.32 ± 0.07",
    (32, "implicit", "euclidean"): "90.33 ± 0.26",
    (32, "implicit", "sphere"): "88.81 ± 0.14",
}


def build(encoder, latent, n, args):
    r"""``(model, guide, loss)`` of one cell of the table."""
    hidden = (args.hidden, args.hidden)
    manifold = "sphere" if latent == "sphere" else None
    vae = SphericalVAE if manifold else EuclideanVAE
    model = vae.mlp(64, n, hidden=hidden)
    if encoder == "implicit":
        guide = ImplicitEncoder.mlp(64, n, args.noise_dim, hidden=hidden, manifold=manifold)
        loss = ImplicitELBO(manifold=manifold, step_size=args.step_size, updates=args.updates)
        return model, guide, loss
    if manifold:
        guide = VonMisesFisherEncoder.mlp(64, n, hidden=hidden)
    else:
        guide = DiagonalNormalEncoder(mlp(64, hidden, 2 * n, nn.Tanh), n)
    return model, guide, Trace_ELBO()


def train(model, guide, loss, x_train, args, seed):
    optim = RMSprop({"lr": args.lr})
    svi = SVI(model, guide, optim, loss=loss)
    gen = torch.Generator().manual_seed(seed)
    n = len(x_train)
    # --steps counts iterations: an alternating loss takes two svi.step calls per iteration
    repeats = 2 if getattr(loss, "updates", None) == "alternating" else 1
    for _ in range(args.steps * repeats):
        idx = torch.randint(n, (args.batch_size,), generator=gen)
        value = svi.step(x_train[idx], n)
        if not math.isfinite(value):
            return float("nan")
    return value / n


def evaluate(model, guide, encoder, x_test, args):
    out = {}
    with torch.no_grad():
        log_p, diag = ais_log_likelihood(
            model,
            x_test,
            num_temperatures=args.ais_temperatures,
            num_chains=args.ais_chains,
            num_leapfrog=args.ais_leapfrog,
            return_diagnostics=True,
        )
    out["nll_ais"] = -float(log_p.mean())
    out["ais_stderr"] = float(diag.stderr.mean())
    out["ais_acceptance"] = float(diag.acceptance_rate.mean())
    if encoder == "explicit":
        log_p = importance_log_likelihood(model, guide, x_test, num_samples=args.is_samples)
        out["nll_is"] = -float(log_p.mean())
    return out


def run(args):
    torch.set_num_threads(1)
    x_train, x_test = load_digits()
    if args.test_points:
        x_test = x_test[: args.test_points]
    rows = []
    start, wall = time.process_time(), time.perf_counter()
    for n in args.latent_dims:
        for encoder in args.encoders:
            for latent in args.latents:
                for seed in args.seeds:
                    pyro.clear_param_store()
                    pyro.set_rng_seed(seed)
                    model, guide, loss = build(encoder, latent, n, args)
                    t0 = time.process_time()
                    final = train(model, guide, loss, x_train, args, seed)
                    t1 = time.process_time()
                    row = {"n_z": n, "encoder": encoder, "latent": latent, "seed": seed}
                    row.update(final_loss=final, train_cpu_s=t1 - t0)
                    if math.isfinite(final):
                        row.update(evaluate(model, guide, encoder, x_test, args))
                    row["eval_cpu_s"] = time.process_time() - t1
                    rows.append(row)
                    if not args.quiet:
                        print(json.dumps(row), flush=True)
    cpu = time.process_time() - start
    args.wall_s = time.perf_counter() - wall
    metrics = ("nll_ais", "nll_is", "ais_stderr", "train_cpu_s", "eval_cpu_s")
    summary = reporting.summarise(rows, ("n_z", "encoder", "latent"), metrics)
    return rows, summary, cpu


def _cell(summary, n, encoder, latent, metric):
    for s in summary:
        if (s["n_z"], s["encoder"], s["latent"]) == (n, encoder, latent):
            return s[metric], s[f"{metric}_sem"]
    return float("nan"), float("nan")


def _order(summary, n, better, worse, metric="nll_ais"):
    a, sa = _cell(summary, n, *better, metric)
    b, sb = _cell(summary, n, *worse, metric)
    if not (math.isfinite(a) and math.isfinite(b)):
        return "—"
    diff = b - a
    se = math.sqrt((sa if math.isfinite(sa) else 0) ** 2 + (sb if math.isfinite(sb) else 0) ** 2)
    verdict = "holds" if diff > 0 else "reversed"
    return f"{verdict} (Δ = {diff:.2f} ± {se:.2f} nats)"


def report(summary, args, cpu):
    header = [
        "n_z",
        "encoder",
        "Euc. AIS",
        "Sph. AIS",
        "Euc. IS",
        "Sph. IS",
        "paper Euc.",
        "paper Sph.",
    ]
    lines = []
    for n in args.latent_dims:
        for encoder in ENCODERS:
            row = [n, encoder]
            for metric in ("nll_ais", "nll_is"):
                for latent in LATENTS:
                    row.append(
                        reporting.format_mean(*_cell(summary, n, encoder, latent, metric), 2)
                    )
            row += [PAPER.get((n, encoder, latent), "—") for latent in LATENTS]
            lines.append(row)
    table = reporting.markdown_table(header, lines)
    checks = []
    for n in args.latent_dims:
        for latent in LATENTS:
            checks.append(
                f"- n_z = {n}, {latent}: implicit < explicit "
                + _order(summary, n, ("implicit", latent), ("explicit", latent))
            )
        for encoder in ENCODERS:
            checks.append(
                f"- n_z = {n}, {encoder}: spherical < Euclidean "
                + _order(summary, n, (encoder, "sphere"), (encoder, "euclidean"))
            )
    return (
        "# Implicit vs explicit, Euclidean vs hyperspherical VAEs on 8x8 digits\n\n"
        f"Test NLL in nats per image (mean ± s.e. over seeds {args.seeds}); the paper's columns "
        "are MNIST (n_z = 8 and 32, mean ± s.d. over 10 runs), so only the ordering compares.\n\n"
        f"{table}\n\nOrdering by AIS (the paper: implicit < explicit; spherical < Euclidean):\n\n"
        + "\n".join(checks)
        + f"\n\nCPU time of the table: {cpu / 60:.1f} min (one thread; "
        f"{args.wall_s / 60:.1f} min wall clock).\n"
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latent-dims", type=int, nargs="+", default=[2, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    p.add_argument("--latents", nargs="+", default=list(LATENTS), choices=LATENTS)
    p.add_argument(
        "--updates",
        default="simultaneous",
        choices=("simultaneous", "alternating"),
        help="ImplicitELBO's update order (alternating: two svi.step calls per iteration)",
    )
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--noise-dim", type=int, default=8)
    p.add_argument("--step-size", type=float, default=1e-3, help="MVL step size epsilon")
    p.add_argument("--ais-temperatures", type=int, default=100)
    p.add_argument("--ais-chains", type=int, default=8)
    p.add_argument("--ais-leapfrog", type=int, default=5)
    p.add_argument("--is-samples", type=int, default=1000)
    p.add_argument("--test-points", type=int, default=0, help="0: the whole test set")
    p.add_argument("--out", default="implicit_vae_out")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny settings, for the tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.latent_dims, args.seeds, args.steps, args.hidden = [2], [0], 3, 8
        args.ais_temperatures, args.ais_chains, args.ais_leapfrog = 3, 2, 2
        args.is_samples, args.test_points, args.quiet = 4, 6, True
    return args


def main(argv=None):
    args = parse_args(argv)
    rows, summary, cpu = run(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": vars(args), "runs": rows, "summary": summary, "cpu_s": cpu}
    (out / "implicit_vae.json").write_text(json.dumps(record, indent=1))
    text = report(summary, args, cpu)
    (out / "implicit_vae.md").write_text(text)
    if not args.quiet:
        print(text)


if __name__ == "__main__":
    main()
