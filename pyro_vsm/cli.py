"""The ``pyro-vsm`` command.

``pyro-vsm compare`` trains a Gaussian VAE on a built-in 2-D data set with ``Trace_ELBO`` and with
``M1Loss`` (and any other objective named with ``--losses``) and prints a comparison on held-out
data: the log-likelihood by importance sampling with the guide as proposal (and the share of points
whose Pareto k-hat flags it), the negative ELBO, Hyvarinen's score-matching loss of the model's
marginal and the learned observation variance.
"""

import argparse
import json
import sys

import torch

from .datasets import DATASETS_2D, make_2d
from .experiments import OBJECTIVE_NAMES, evaluate_vae, make_objective, train_vae


def _device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_and_evaluate(name, args, x_train, x_test):
    loss = make_objective(name, particles=args.particles, guide_steps=args.guide_steps)
    model, guide, seconds = train_vae(
        loss,
        x_train,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=tuple(args.hidden),
        latent_dim=args.latent_dim,
        seed=args.seed,
        progress=not args.quiet,
        desc=name,
    )
    row = {"objective": name, "train_seconds": seconds}
    row.update(evaluate_vae(model, guide, x_test, eval_samples=args.eval_samples))
    return row


def format_table(rows):
    header = (
        f"{'objective':<14}{'test NLL (IS)':>15}{'k>0.7':>7}{'test -ELBO':>13}{'test SM':>12}"
        f"{'gamma':>10}{'time (s)':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['objective']:<14}{r['test_nll']:>15.3f}{r['khat_above_0.7']:>7.0%}"
            f"{r['test_neg_elbo']:>13.3f}"
            f"{r['test_score_matching']:>12.3f}{r['gamma']:>10.4f}{r['train_seconds']:>10.1f}"
        )
    return "\n".join(lines)


def compare(args):
    device = _device(args.device)
    x_train = make_2d(args.dataset, args.num_data, seed=args.seed, device=device)
    x_test = make_2d(args.dataset, args.num_test, seed=args.seed + 1, device=device)
    print(
        f"dataset {args.dataset}: {args.num_data} train / {args.num_test} test points, device {device}, "
        f"{args.steps} steps of batch {args.batch_size}, seed {args.seed}"
    )
    rows = [train_and_evaluate(name, args, x_train, x_test) for name in args.losses]
    print(format_table(rows))
    print(
        "NLL, -ELBO and SM (Hyvarinen's score-matching loss of p(x)) are per test point "
        "(lower is better). NLL uses "
        f"{args.eval_samples} importance samples from the guide; k>0.7 is the share of test points "
        "whose Pareto k-hat says that estimate is unreliable."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=2)
    return rows


def build_parser():
    parser = argparse.ArgumentParser(prog="pyro-vsm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="train a Gaussian VAE with several objectives and compare")
    p.add_argument(
        "--dataset", default="banana", choices=sorted(DATASETS_2D), help="built-in 2-D data set"
    )
    p.add_argument(
        "--losses",
        nargs="+",
        default=["elbo", "m1-kl"],
        choices=OBJECTIVE_NAMES,
        help="objectives to compare",
    )
    p.add_argument("--num-data", type=int, default=2000, help="training points")
    p.add_argument("--num-test", type=int, default=1000, help="held-out points")
    p.add_argument("--steps", type=int, default=10000, help="svi.step calls per objective")
    p.add_argument("--batch-size", type=int, default=200, help="minibatch size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--latent-dim", type=int, default=2, help="latent dimension")
    p.add_argument("--hidden", type=int, nargs="+", default=[30, 30], help="hidden layer widths")
    p.add_argument("--particles", type=int, default=1, help="guide samples per data point")
    p.add_argument(
        "--guide-steps", type=int, default=1, help="J: guide updates per model update (M1-M3)"
    )
    p.add_argument(
        "--eval-samples", type=int, default=1000, help="importance samples per test point"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu' or 'cuda'")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        compare(args)
    except (ValueError, RuntimeError) as e:
        print(f"pyro-vsm: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
