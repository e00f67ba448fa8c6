r"""The options of the ``pyro-vsm`` command, with their checks: every numeric option is parsed
and range-checked by its ``type``, every path option is checked before any work starts, and a
bad value is reported in one line (exit status 1, never a traceback or a silent run)."""

import argparse
import math
import os

from .experiments.config import data_defaults
from .experiments.training import available_cores

__all__ = ["DEFAULT_COMPARE", "UsageError", "build_parser", "check_paths"]

DEFAULT_COMPARE = ["elbo", "m1-kl", "m1-fisher", "m2-kl", "m3-kl", "joint-fisher"]


class UsageError(Exception):
    r"""A bad command line (raised instead of argparse's exit with status 2)."""

    def __init__(self, prog, message):
        super().__init__(message)
        self.prog, self.message = prog, message


class Parser(argparse.ArgumentParser):
    r"""An ``ArgumentParser`` whose errors raise :class:`UsageError` (one line, status 1)."""

    def error(self, message):
        raise UsageError(self.prog, message.splitlines()[0])


def integer(low, high=None):
    r"""An argparse ``type``: an integer in ``[low, high]``.

    :param int low: the smallest value.
    :param int high: the largest value, or ``None``.
    """

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(text):
    r"""An argparse ``type``: a finite number > 0.

    :param str text: the value.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def threads(text):
    r"""An argparse ``type``: ``auto`` or a positive integer.

    :param str text: the value.
    """
    return "auto" if text == "auto" else integer(1)(text)


def _writable_folder(path, option):
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"{option} {path!r} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {path!r} is not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path!r} cannot be created ({parent!r} is not writable)")


def check_paths(args):
    r"""Checks the path options of a parsed command line before any work starts.

    :param args: the parsed arguments.
    """
    out = getattr(args, "out", None)
    if out is not None and not getattr(args, "resume", False):
        _writable_folder(out, "--out")
    json_path = getattr(args, "json", None)
    if json_path is not None:
        if os.path.isdir(json_path):
            raise ValueError(f"--json {json_path!r} is a folder, not a file")
        folder = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(folder):
            raise ValueError(f"--json {json_path!r}: folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK):
            raise ValueError(f"--json {json_path!r}: folder {folder!r} is not writable")
    root = getattr(args, "data_root", None)
    if root is not None and os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"--data-root {root!r} exists and is not a folder")


def _data_arguments(p, dataset_default="mixture"):
    p.add_argument(
        "--dataset",
        default=dataset_default,
        help="built-in 2-D set (banana, rings, 8gaussians, checkerboard, 2spirals, star, mixture), "
        "'digits' (scikit-learn's 8x8 digits, dequantised to (0, 1)), mnist/fashion-mnist/cifar10 "
        "(torchvision, files under --data-root), or a path to an (n, d) .npy/.npz/.csv file "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--num-data",
        type=integer(2),
        default=2000,
        help="training points (2-D sets: drawn; others: at most) (default: %(default)s)",
    )
    p.add_argument(
        "--num-test", type=integer(2), default=1000, help="held-out points (default: %(default)s)"
    )
    p.add_argument("--data-root", default="data", help="folder of torchvision data sets")
    p.add_argument(
        "--download", action="store_true", help="let torchvision download missing data sets"
    )
    p.add_argument(
        "--seed",
        type=integer(0),
        default=0,
        help="random seed (data draws, init, training) (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda'")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _chosen(key):
    small, large = data_defaults(2)[key], data_defaults(64)[key]
    if isinstance(small, list):
        small, large = " ".join(map(str, small)), " ".join(map(str, large))
    return f"default: chosen from the data: {small} for 2-D data, {large} for the 8x8 digits"


def _model_arguments(p):
    p.add_argument(
        "--model",
        choices=("mlp", "conv"),
        default="mlp",
        help="networks: MLPs, or DCGAN-style conv nets for square images (image data sets)",
    )
    p.add_argument(
        "--latent",
        choices=("gaussian", "binary"),
        default="gaussian",
        help="latents: Gaussian, or binary (Bernoulli prior and guide, trained through a "
        "relaxed Bernoulli; objectives elbo, m1-kl, m1-fisher) (default: %(default)s)",
    )
    p.add_argument(
        "--latent-dim", type=integer(1), default=None, help=f"latent size ({_chosen('latent_dim')})"
    )
    p.add_argument(
        "--hidden",
        type=integer(1),
        nargs="+",
        default=None,
        help="hidden widths of the MLPs, or the width of the conv nets (first value) "
        f"({_chosen('hidden')}; conv: 32)",
    )
    p.add_argument(
        "--steps",
        type=integer(1),
        default=None,
        help=f"svi.step calls (guide + model updates) ({_chosen('steps')})",
    )
    p.add_argument(
        "--batch-size", type=integer(1), default=None, help=f"minibatch ({_chosen('batch_size')})"
    )
    p.add_argument(
        "--lr", type=positive_float, default=None, help=f"Adam learning rate ({_chosen('lr')})"
    )
    p.add_argument(
        "--gamma-init",
        type=positive_float,
        default=None,
        help="initial observation variance (default: chosen from the data: 1 for 2-D data, a "
        "tenth of the data's mean per-dimension variance for larger data, 0.0065 for the digits)",
    )
    p.add_argument(
        "--particles",
        type=integer(1),
        default=2,
        help="guide samples per point (M2/M3: at least 2) (default: %(default)s)",
    )
    p.add_argument(
        "--guide-steps",
        type=integer(0),
        default=1,
        help="J: guide updates per model update (default: %(default)s)",
    )
    p.add_argument(
        "--bilevel-steps",
        type=integer(0),
        default=0,
        help="K: unrolled guide updates (M3) (default: %(default)s)",
    )
    p.add_argument(
        "--temperature",
        type=positive_float,
        default=0.5,
        help="temperature of the relaxed Bernoulli (--latent binary) (default: %(default)s)",
    )


def _evaluation_arguments(p):
    p.add_argument(
        "--eval-samples",
        type=integer(2),
        default=1000,
        help="importance samples per point (default: %(default)s)",
    )
    p.add_argument(
        "--ais-temperatures",
        type=integer(1),
        default=200,
        help="AIS annealing steps (default: %(default)s)",
    )
    p.add_argument(
        "--ais-points",
        type=integer(1),
        default=None,
        help=f"held-out points evaluated by AIS, the first ones ({_chosen('ais_points')})",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def _threads_argument(p):
    p.add_argument(
        "--threads",
        type=threads,
        default="auto",
        help="torch threads: 'auto' (1 for small models, whose many tiny operations only "
        "contend for threads; more for large ones) or a number (default: %(default)s)",
    )


def build_parser(objective_names):
    r"""The ``pyro-vsm`` argument parser.

    :param objective_names: the registered objectives.
    """
    names = ", ".join(objective_names)
    parser = Parser(
        prog="pyro-vsm",
        description="Variational score matching for Pyro: compare, train, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "compare",
        help="train several objectives on one data set and compare them on held-out data",
        description="Trains every objective on the same data, each in its own single-threaded "
        "worker process, and evaluates all on the same held-out metrics. Defaults: the six "
        f"objectives {' '.join(DEFAULT_COMPARE)} on the 'mixture' data with 2000 steps.",
    )
    _data_arguments(p)
    _model_arguments(p)
    _evaluation_arguments(p)
    p.add_argument(
        "--losses",
        nargs="+",
        default=DEFAULT_COMPARE,
        metavar="LOSS",
        help=f"objectives to compare ('all': every one), from: {names} "
        f"(default: {' '.join(DEFAULT_COMPARE)})",
    )
    p.add_argument(
        "--jobs",
        type=integer(1),
        default=available_cores(),
        help="worker processes, one torch thread each; results do not depend on it "
        "(default: the number of cores, %(default)s)",
    )
    p.add_argument(
        "--out",
        default="results/compare",
        help="folder for report.json/.md and compare.png (default: %(default)s)",
    )
    p.add_argument("--no-figure", action="store_true", help="skip the PNG figure")

    p = sub.add_parser("train", help="train one model with one objective, with checkpoints")
    _data_arguments(p)
    _model_arguments(p)
    p.add_argument(
        "--loss", default="m1-kl", help=f"objective, one of: {names} (default: %(default)s)"
    )
    p.add_argument(
        "--checkpoint-every",
        type=integer(1),
        default=500,
        help="steps between checkpoints (default: %(default)s)",
    )
    p.add_argument(
        "--devices", type=int, default=1, help="processes (>1: DDP via Lightning; default: 1)"
    )
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--strategy", default="auto", choices=["auto", "ddp"], help="auto: per loss")
    p.add_argument(
        "--out", default="results/train", help="folder of checkpoint.pt (default: %(default)s)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (its configuration wins) up to --steps",
    )
    _threads_argument(p)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on its (or another) data set")
    p.add_argument("checkpoint", help="path of a checkpoint written by 'pyro-vsm train'")
    p.add_argument("--dataset", default=None, help="data set (default: the checkpoint's)")
    p.add_argument("--data-root", default="data", help="folder of torchvision data sets")
    p.add_argument("--download", action="store_true", help="let torchvision download data")
    p.add_argument(
        "--seed",
        type=integer(0),
        default=0,
        help="random seed of the estimators (default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    _evaluation_arguments(p)
    _threads_argument(p)
    return parser
