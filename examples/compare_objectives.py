"""Figure 3 of Wenliang (2022) at small scale: which objective fits a Gaussian VAE?

A Gaussian VAE (two hidden layers of 30 units, 2-d latent) is trained on 2-D data sets by every
combination the paper compares — ELBO, and KL or Fisher inference with the M1, M2 and M3 learning
objectives — with ``J`` guide updates per model update and, for M3, ``K`` bi-level (unrolled)
guide updates, over several seeds. Each model is evaluated on held-out data by the negative
log-likelihood (importance sampling with the guide as proposal) and Hyvärinen's score-matching loss
of its marginal (self-normalised posterior expectations). Writes ``results.json``, ``results.md``
(the table, mean ± s.e.m. over seeds) and ``figure.png`` into ``--out``.

The paper's claims to check: ELBO ≈ KL-M1, both better than M2 and M3; Fisher inference slightly
worse than KL inference.

    python examples/compare_objectives.py [--datasets mixture star] [--seeds 3] [--steps 4000]
    python examples/compare_objectives.py --smoke      # a few seconds, for the test suite
"""

import argparse
import json
import math
import os

import torch

from pyro_vsm import NonFiniteLossError, reporting
from pyro_vsm.datasets import DATASETS_2D, make_2d
from pyro_vsm.experiments import evaluate_vae, make_objective, train_vae

METRICS = ("test_nll", "test_score_matching", "khat_above_0.7", "test_neg_elbo", "gamma")


def configurations(guide_steps, bilevel_steps):
    """(label, objective name, J, K) of every run, in the paper's order."""
    out = [("ELBO", "elbo", 1, 0)]
    for learning in ("m1", "m2", "m3"):
        for inference, tag in (("kl", "KL"), ("fisher", "F")):
            for j in guide_steps:
                for k in bilevel_steps if learning == "m3" else (0,):
                    label = f"{tag}-{learning.upper()} J={j}" + (
                        f" K={k}" if learning == "m3" else ""
                    )
                    out.append((label, f"{learning}-{inference}", j, k))
    return out


def one_run(args, dataset, label, name, j, k, seed, x_train, x_test):
    """Trains and evaluates one setting; a run that diverges is recorded with NaN metrics."""
    row = {"dataset": dataset, "objective": label, "J": j, "K": k, "seed": seed}
    loss = make_objective(name, particles=args.particles, guide_steps=j, bilevel_steps=k)
    try:
        model, guide, seconds = train_vae(
            loss,
            x_train,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            hidden=(30, 30),
            seed=seed,
            progress=args.progress,
            desc=f"{dataset} {label} seed {seed}",
        )
    except (NonFiniteLossError, ValueError) as e:
        # a diverged run is a result, not a crash: non-finite losses, and parameters that drifted
        # out of their distributions' domain (Pyro's validation) are both recorded with the error
        row.update({key: math.nan for key in METRICS}, diverged=str(e))
        return row
    row.update(evaluate_vae(model, guide, x_test, eval_samples=args.eval_samples))
    row["train_seconds"] = seconds
    return row


def run(args):
    rows = []
    for dataset in args.datasets:
        x_train = make_2d(dataset, args.num_data, seed=1000, dtype=torch.float32)
        x_test = make_2d(dataset, args.num_test, seed=2000, dtype=torch.float32)
        for label, name, j, k in configurations(args.guide_steps, args.bilevel_steps):
            for seed in range(args.seeds):
                row = one_run(args, dataset, label, name, j, k, seed, x_train, x_test)
                rows.append(row)
                if args.quiet:
                    continue
                if "diverged" in row:
                    print(f"{dataset:<12}{label:<18} seed {seed}: diverged", flush=True)
                else:
                    print(
                        f"{dataset:<12}{label:<18} seed {seed}: NLL {row['test_nll']:8.3f}  "
                        f"SM {row['test_score_matching']:9.3f}  ({row['train_seconds']:.0f} s)",
                        flush=True,
                    )
    return rows


def summarise(rows):
    """Mean and s.e.m. over seeds per (dataset, objective), over the runs that did not diverge."""
    summary = reporting.summarise(rows, ("dataset", "objective"), METRICS[:4], count="seeds")
    for entry in summary:
        key = (entry["dataset"], entry["objective"])
        entry["diverged"] = sum(
            "diverged" in r for r in rows if (r["dataset"], r["objective"]) == key
        )
    return summary


def markdown(summary):
    lines = [
        "| data set | objective | test NLL | test SM loss | -ELBO | k̂ > 0.7 | diverged |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['dataset']} | {s['objective']} | {s['test_nll']:.3f} ± {s['test_nll_sem']:.3f} "
            f"| {s['test_score_matching']:.3f} ± {s['test_score_matching_sem']:.3f} "
            f"| {s['test_neg_elbo']:.3f} | {s['khat_above_0.7']:.0%} "
            f"| {s['diverged']}/{s['seeds']} |"
        )
    return "\n".join(lines)


def figure(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(14, 3.2 * len(datasets)), squeeze=False, constrained_layout=True
    )
    for row, dataset in enumerate(datasets):
        entries = [s for s in summary if s["dataset"] == dataset]
        labels = [s["objective"] for s in entries]
        for col, (key, title) in enumerate(
            (("test_nll", "test NLL (nats)"), ("test_score_matching", "test SM loss"))
        ):
            ax = axes[row][col]
            values = [s[key] for s in entries]
            errors = [0.0 if math.isnan(s[key + "_sem"]) else s[key + "_sem"] for s in entries]
            colors = ["C0" if lab.startswith(("ELBO", "KL")) else "C1" for lab in labels]
            ax.bar(range(len(labels)), values, yerr=errors, color=colors)
            ax.set_xticks(range(len(labels)), labels, rotation=70, fontsize=7)
            ax.set_title(f"{dataset}: {title}")
            finite = sorted(v for v in values if math.isfinite(v))
            if finite:  # clip the axis like the paper's figure: M3 runs can be far off
                lo, hi = finite[0], finite[min(len(finite) - 1, len(finite) * 3 // 4)]
                ax.set_ylim(lo - 0.1 * abs(lo) - 0.1, hi + 0.5 * (hi - lo) + 0.1)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets", nargs="+", default=["mixture", "star"], choices=sorted(DATASETS_2D)
    )
    p.add_argument("--seeds", type=int, default=3, help="independent initialisations per setting")
    p.add_argument("--steps", type=int, default=4000, help="svi.step calls (guide + model updates)")
    p.add_argument("--guide-steps", type=int, nargs="+", default=[1, 5], help="values of J")
    p.add_argument("--bilevel-steps", type=int, nargs="+", default=[0, 2], help="values of K (M3)")
    p.add_argument("--particles", type=int, default=2, help="guide samples per point (>= 2)")
    p.add_argument("--num-data", type=int, default=2000)
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-samples", type=int, default=1000, help="importance samples per point")
    p.add_argument("--out", default="results/compare_objectives")
    p.add_argument("--progress", action="store_true", help="tqdm bar per run")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.datasets, args.seeds, args.steps = args.datasets[:1], 1, 4
        args.guide_steps, args.bilevel_steps = [1], [0, 1]
        args.num_data, args.num_test, args.batch_size, args.eval_samples = 64, 16, 16, 20
    rows = run(args)
    summary = summarise(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "runs": rows, "summary": summary}, f, indent=2)
    table = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    figure(summary, os.path.join(args.out, "figure.png"))
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
