"""The ``pyro-vsm`` command (also ``python -m pyro_vsm``).

* ``pyro-vsm compare``: train a Gaussian VAE with several objectives on one data set and compare
  them on held-out data (NLL by importance sampling and by AIS, score-matching loss, MMD to the
  held-out data, reconstruction MSE, marginal KL); prints a table and writes ``report.json``,
  ``report.md`` and ``compare.png`` into ``--out``.
* ``pyro-vsm train``: train one model with one objective, checkpointing every N steps;
  ``--resume`` continues from the last checkpoint.
* ``pyro-vsm evaluate``: evaluate a checkpoint on its data set (or another one).

Data sets: the built-in 2-D sets, ``digits`` (scikit-learn, optional), torchvision sets present on
disk (optional), or a path to your own ``.npy``/``.npz``/``.csv`` file of shape ``(n, d)``.
Errors (unknown names, missing files, corrupt checkpoints) print one line to stderr and exit with
status 1.
"""

import argparse
import json
import math
import os
import sys
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from .checkpoint import load_checkpoint, restore, save_checkpoint
from .datasets.files import load_dataset
from .experiments import (
    OBJECTIVE_NAMES,
    build_vae,
    evaluate_vae,
    make_objective,
    sample_vae,
    train_steps,
)
from .infer import NonFiniteLossError

DEFAULT_COMPARE = ["elbo", "m1-kl", "m1-fisher", "m2-kl", "m3-kl", "joint-fisher"]
#: Keys of the run configuration that define the model, the data and the objective.
CONFIG_KEYS = (
    "dataset",
    "num_data",
    "num_test",
    "seed",
    "latent_dim",
    "hidden",
    "loss",
    "particles",
    "guide_steps",
    "bilevel_steps",
    "lr",
    "batch_size",
)


def _device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    return device


def _check_losses(names):
    unknown = [n for n in names if n not in OBJECTIVE_NAMES]
    if unknown:
        raise ValueError(
            f"unknown loss {', '.join(map(repr, unknown))}; choose from {', '.join(OBJECTIVE_NAMES)}"
        )


def _data(config, args, device, dataset=None):
    """``(x_train, x_test)`` of a run configuration (``dataset`` overrides the configured one)."""
    return load_dataset(
        dataset or config["dataset"],
        config["num_data"],
        config["num_test"],
        seed=config["seed"],
        device=device,
        data_root=args.data_root,
        download=args.download,
    )


def _objective(name, config):
    return make_objective(
        name,
        particles=config["particles"],
        guide_steps=config["guide_steps"],
        bilevel_steps=config["bilevel_steps"],
    )


# ---- compare -----------------------------------------------------------------------------
def _compare_one(name, args, x_train, x_test):
    config = {**vars(args), "loss": name}
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    model, guide = build_vae(
        x_train.shape[-1], args.latent_dim, args.hidden, dtype=x_train.dtype, device=x_train.device
    )
    svi = SVI(model, guide, Adam({"lr": args.lr}), loss=_objective(name, config))
    start = time.perf_counter()
    row = {"objective": name}
    try:
        train_steps(svi, x_train, args.steps, args.batch_size, progress=not args.quiet, desc=name)
    except NonFiniteLossError as e:
        row.update(diverged=str(e), train_seconds=time.perf_counter() - start)
        return row, None, None
    row["train_seconds"] = time.perf_counter() - start
    row.update(
        evaluate_vae(
            model,
            guide,
            x_test,
            eval_samples=args.eval_samples,
            full=True,
            ais_temperatures=args.ais_temperatures,
            ais_points=args.ais_points,
        )
    )
    return row, model, guide


COLUMNS = (
    ("test_nll", "NLL (IS)", "{:.3f}"),
    ("khat_above_0.7", "k>0.7", "{:.0%}"),
    ("test_nll_ais", "NLL (AIS)", "{:.3f}"),
    ("test_score_matching", "SM loss", "{:.3f}"),
    ("mmd_to_test", "MMD²", "{:.4f}"),
    ("reconstruction_mse", "recon MSE", "{:.4f}"),
    ("marginal_kl", "marg. KL", "{:.3f}"),
    ("gamma", "gamma", "{:.4f}"),
    ("train_seconds", "train s", "{:.1f}"),
)


def _cell(row, key, fmt):
    if "diverged" in row and key != "train_seconds":
        return "diverged" if key == "test_nll" else "—"
    value = row.get(key)
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (fmt.format(value))
    )


def format_table(rows):
    """The comparison as plain text (stdout)."""
    header = f"{'objective':<14}" + "".join(f"{label:>11}" for _, label, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['objective']:<14}" + "".join(f"{_cell(r, k, f):>11}" for k, _, f in COLUMNS)
        )
    return "\n".join(lines)


def format_markdown(rows):
    lines = [
        "| objective | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
        "| --- " * (len(COLUMNS) + 1) + "|",
    ]
    for r in rows:
        cells = " | ".join(_cell(r, k, f) for k, _, f in COLUMNS)
        lines.append(f"| {r['objective']} | {cells} |")
    return "\n".join(lines)


def _figure(trained, x_test, path):
    """Samples (and, for 2-D data, the model density) per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .evaluation import importance_log_likelihood

    trained = [(n, m, g) for n, m, g in trained if m is not None]
    if not trained:
        return None
    dim = x_test.shape[-1]
    side = int(round(math.sqrt(dim)))
    if dim != 2 and side * side != dim:
        return None
    rows = 2 if dim == 2 else 1
    fig, axes = plt.subplots(
        rows, len(trained), figsize=(3 * len(trained), 3 * rows), squeeze=False
    )
    data = x_test.detach().cpu()
    for col, (name, model, guide) in enumerate(trained):
        samples = sample_vae(model, min(1000, max(x_test.shape[0], 16))).cpu()
        ax = axes[0][col]
        ax.set_title(name, fontsize=9)
        if dim == 2:
            ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="held-out data")
            ax.scatter(samples[:, 0], samples[:, 1], s=2, c="C0", label="model samples")
            lo, hi = data.min(0).values - 0.5, data.max(0).values + 0.5
            xs = torch.linspace(float(lo[0]), float(hi[0]), 60)
            ys = torch.linspace(float(lo[1]), float(hi[1]), 60)
            gx, gy = torch.meshgrid(xs, ys, indexing="xy")
            grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1).to(x_test)
            logp = importance_log_likelihood(model, guide, grid, num_samples=100, progress=False)
            axes[1][col].contourf(gx, gy, logp.cpu().exp().reshape(60, 60), levels=20)
            axes[1][col].set_title(f"{name}: p(x)", fontsize=9)
            for a in (ax, axes[1][col]):
                a.set_xlim(float(lo[0]), float(hi[0]))
                a.set_ylim(float(lo[1]), float(hi[1]))
        else:
            tiles = samples[:16].reshape(4, 4, side, side).permute(0, 2, 1, 3)
            ax.imshow(tiles.reshape(4 * side, 4 * side).clamp(0, 1), cmap="gray")
            ax.axis("off")
    axes[0][0].legend(fontsize=7, loc="upper left", markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(args):
    _check_losses(args.losses)
    device = _device(args.device)
    x_train, x_test = _data(vars(args), args, device)
    print(
        f"dataset {args.dataset}: {x_train.shape[0]} train / {x_test.shape[0]} held-out points of "
        f"dimension {x_train.shape[-1]}, device {device}, {args.steps} steps of batch "
        f"{args.batch_size}, seed {args.seed}"
    )
    rows, trained = [], []
    for name in args.losses:
        row, model, guide = _compare_one(name, args, x_train, x_test)
        rows.append(row)
        trained.append((name, model, guide))
    table = format_table(rows)
    print(table)
    notes = (
        "Per held-out point, lower is better: NLL by importance sampling with the guide as "
        f"proposal ({args.eval_samples} samples; k>0.7: share of points whose Pareto k-hat flags "
        f"that estimate) and by AIS from the prior ({args.ais_temperatures} temperatures, first "
        f"{args.ais_points} points); SM loss: Hyvarinen's score-matching loss of p(x); MMD²: "
        "model samples vs held-out data; recon MSE: decoded posterior mean; marg. KL: "
        "KL[q(z) || p(z)] of the aggregate posterior."
    )
    print(notes)
    os.makedirs(args.out, exist_ok=True)
    report = {"args": vars(args), "device": str(device), "results": rows, "notes": notes}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(f"# pyro-vsm compare: {args.dataset}\n\n{format_markdown(rows)}\n\n{notes}\n")
    if not args.no_figure:
        path = _figure(trained, x_test, os.path.join(args.out, "compare.png"))
        if path:
            print(f"wrote {args.out}/report.json, report.md and compare.png")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return rows


# ---- train / evaluate --------------------------------------------------------------------
def _config(args):
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in vars(args).items()
        if k in CONFIG_KEYS
    }


def _processes(args):
    """``--devices/--accelerator/--strategy`` against ``--device``: the plain path's device, or
    ``None`` for Lightning (``--devices`` > 1)."""
    if args.devices < 1:
        raise ValueError(f"--devices must be at least 1, got {args.devices}")
    wanted = {"cpu": "cpu", "gpu": "cuda"}.get(args.accelerator)
    given = None if args.device == "auto" else _device(args.device).type
    if wanted and given and wanted != given:
        raise ValueError(f"--device {args.device} conflicts with --accelerator {args.accelerator}")
    if args.devices == 1:
        if args.strategy != "auto":
            raise ValueError("--strategy ddp needs --devices 2 or more")
        return _device(args.device if given or not wanted else wanted)
    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError("--device names one device; with --devices N use --accelerator gpu")
    args.accelerator = {"cpu": "cpu", "cuda": "gpu"}.get(given, args.accelerator)
    return None


def train(args):
    _check_losses([args.loss])
    device = _processes(args)
    path = os.path.join(args.out, "checkpoint.pt")
    state = None
    if args.resume:
        state = load_checkpoint(path)
        config = state["config"]
        if config.get("devices", 1) != args.devices:
            raise ValueError(f"{path} was trained with --devices {config.get('devices', 1)}")
        print(f"resuming {config['loss']} on {config['dataset']} from step {state['step']}")
    else:
        config = {**_config(args), **({} if device else {"devices": args.devices})}
    x_train, _ = _data(config, args, device or "cpu")
    pyro.clear_param_store()
    pyro.set_rng_seed(config["seed"])
    with pyro.settings.context(module_local_params=device is None):
        model, guide = build_vae(
            x_train.shape[-1], config["latent_dim"], config["hidden"], dtype=x_train.dtype
        )
        loss = _objective(config["loss"], config)
        if device is None:  # several processes: Lightning (the [lightning] extra)
            from .lightning import train_command

            train_command(model, guide, loss, x_train, config, args)
            print(f"trained {config['loss']} to step {args.steps}; checkpoint: {path}")
            return model, guide
    model, guide = model.to(device), guide.to(device)
    optim = Adam({"lr": config["lr"]})
    start = 0
    if state is not None:
        restore(state, model=model, guide=guide, optim=optim, loss=loss)
        start = state["step"]
    svi = SVI(model, guide, optim, loss=loss)

    def checkpoint(step):
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_checkpoint(
                path, config=config, step=step, model=model, guide=guide, optim=optim, loss=loss
            )

    train_steps(
        svi,
        x_train,
        args.steps,
        config["batch_size"],
        start=start,
        progress=not args.quiet,
        desc=config["loss"],
        callback=checkpoint,
    )
    if start >= args.steps:
        print(f"checkpoint already at step {start} >= --steps {args.steps}; nothing to do")
    print(f"trained {config['loss']} to step {max(start, args.steps)}; checkpoint: {path}")
    return model, guide


def evaluate(args):
    device = _device(args.device)
    state = load_checkpoint(args.checkpoint)
    config = state["config"]
    dataset = args.dataset or config["dataset"]
    _, x_test = _data(config, args, device, dataset)
    model, guide = build_vae(
        x_test.shape[-1], config["latent_dim"], config["hidden"], dtype=x_test.dtype, device=device
    )
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except RuntimeError as e:
        raise ValueError(f"{args.checkpoint}: the data set does not fit this model ({e})") from e
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    row = {"objective": config["loss"], "step": state["step"], "dataset": dataset}
    row.update(
        evaluate_vae(
            model,
            guide,
            x_test,
            eval_samples=args.eval_samples,
            full=True,
            ais_temperatures=args.ais_temperatures,
            ais_points=args.ais_points,
        )
    )
    row["train_seconds"] = float("nan")
    print(f"{config['loss']} at step {state['step']} on {dataset} ({x_test.shape[0]} points)")
    print(format_table([row]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)
    return row


# ---- argument parsing --------------------------------------------------------------------
def _data_arguments(p, dataset_default="mixture"):
    p.add_argument(
        "--dataset",
        default=dataset_default,
        help="built-in 2-D set (banana, rings, 8gaussians, checkerboard, 2spirals, star, mixture), "
        "'digits' (needs scikit-learn), mnist/fashion-mnist/cifar10 (torchvision, files under "
        "--data-root), or a path to an (n, d) .npy/.npz/.csv file",
    )
    p.add_argument("--num-data", type=int, default=2000, help="training points (2-D sets: drawn)")
    p.add_argument("--num-test", type=int, default=1000, help="held-out points")
    p.add_argument("--data-root", default="data", help="folder of torchvision data sets")
    p.add_argument(
        "--download", action="store_true", help="let torchvision download missing data sets"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (data draws, init, training)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda'")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_arguments(p):
    p.add_argument("--latent-dim", type=int, default=2, help="latent dimension")
    p.add_argument("--hidden", type=int, nargs="+", default=[30, 30], help="hidden layer widths")
    p.add_argument("--steps", type=int, default=2000, help="svi.step calls (guide + model updates)")
    p.add_argument("--batch-size", type=int, default=200, help="minibatch size")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument(
        "--particles", type=int, default=2, help="guide samples per point (M2/M3: at least 2)"
    )
    p.add_argument("--guide-steps", type=int, default=1, help="J: guide updates per model update")
    p.add_argument("--bilevel-steps", type=int, default=0, help="K: unrolled guide updates (M3)")


def _evaluation_arguments(p):
    p.add_argument("--eval-samples", type=int, default=1000, help="importance samples per point")
    p.add_argument("--ais-temperatures", type=int, default=200, help="AIS annealing steps")
    p.add_argument("--ais-points", type=int, default=1000, help="held-out points evaluated by AIS")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pyro-vsm",
        description="Variational score matching for Pyro: compare, train, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "compare", help="train a Gaussian VAE with several objectives and compare them"
    )
    _data_arguments(p)
    _model_arguments(p)
    _evaluation_arguments(p)
    p.add_argument(
        "--losses",
        nargs="+",
        default=DEFAULT_COMPARE,
        metavar="LOSS",
        help=f"objectives to compare, from: {', '.join(OBJECTIVE_NAMES)}",
    )
    p.add_argument("--out", default="results/compare", help="folder for report.json/.md and PNG")
    p.add_argument("--no-figure", action="store_true", help="skip the PNG figure")

    p = sub.add_parser("train", help="train one model with one objective, with checkpoints")
    _data_arguments(p)
    _model_arguments(p)
    p.add_argument(
        "--loss", default="m1-kl", help=f"objective, one of: {', '.join(OBJECTIVE_NAMES)}"
    )
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--devices", type=int, default=1, help="processes (>1: DDP via Lightning)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp"], help="auto: per loss")
    p.add_argument("--out", default="results/train", help="folder of checkpoint.pt")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (its configuration wins) up to --steps",
    )

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on its (or another) data set")
    p.add_argument("checkpoint", help="path of a checkpoint written by 'pyro-vsm train'")
    p.add_argument("--dataset", default=None, help="data set (default: the checkpoint's)")
    p.add_argument("--data-root", default="data", help="folder of torchvision data sets")
    p.add_argument("--download", action="store_true", help="let torchvision download data")
    p.add_argument("--seed", type=int, default=0, help="random seed of the estimators")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    _evaluation_arguments(p)
    return parser


COMMANDS = {"compare": compare, "train": train, "evaluate": evaluate}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "hidden", None) is not None:
        args.hidden = list(args.hidden)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError, FloatingPointError, ImportError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"pyro-vsm {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
