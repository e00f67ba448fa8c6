r"""The ``pyro-vsm`` command (also ``python -m pyro_vsm``).

* ``pyro-vsm compare``: train every chosen objective on one data set, each in its own
  single-threaded worker process, and compare them on the same held-out metrics; prints a table
  and writes ``report.json``, ``report.md`` and ``compare.png`` into ``--out``.
* ``pyro-vsm train``: train one model with one objective, checkpointing every N steps;
  ``--resume`` continues from the last checkpoint.
* ``pyro-vsm evaluate``: evaluate a checkpoint on its data set (or another one).

Objectives: every name of :mod:`pyro_vsm.experiments.families` (``--losses all`` runs them all).
Data sets: the built-in 2-D sets, ``digits`` (scikit-learn, optional), torchvision sets present on
disk (optional), or a path to your own ``.npy``/``.npz``/``.csv`` file of shape ``(n, d)``.
Bad input (unknown names, out-of-range numbers, missing files, corrupt checkpoints) prints one
line to stderr and exits with status 1.
"""

import json
import os
import sys

import pyro
import torch

from . import cli_options
from .checkpoint import load_checkpoint, restore, save_checkpoint
from .datasets.files import image_shape, load_dataset
from .experiments import (
    CONFIG_KEYS,
    OBJECTIVE_NAMES,
    auto_threads,
    evaluate_built,
    evaluation_defaults,
    get_objective,
    num_threads,
    resolve_config,
    resolve_losses,
    run_compare,
    train_built,
)
from .experiments.report import format_table

DEFAULT_COMPARE = cli_options.DEFAULT_COMPARE


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


def _data(config, args, device, dataset=None):
    r"""``(x_train, x_test)`` of a run configuration (``dataset`` overrides the configured one)."""
    name = dataset or config["dataset"]
    conv = config.get("model") == "conv"
    if conv and image_shape(name) is None:
        raise ValueError(f"--model conv needs an image data set, got {name!r}")
    return load_dataset(
        name,
        config["num_data"],
        config["num_test"],
        seed=config["seed"],
        device=device,
        data_root=args.data_root,
        download=args.download,
        image=conv,
    )


def _complete(config):
    r"""Fills the keys that checkpoints of earlier versions did not store."""
    defaults = {"model": "mlp", "latent": "gaussian", "temperature": 0.5, "image_shape": None}
    return {**defaults, **config}


def _threads(args, modules, batch):
    return auto_threads(modules, batch) if args.threads == "auto" else args.threads


# ---- compare -----------------------------------------------------------------------------
def compare(args):
    cli_options.check_paths(args)
    return run_compare(args, _device(args.device))["results"]


# ---- train / evaluate --------------------------------------------------------------------
def _processes(args):
    r"""``--devices/--accelerator/--strategy`` against ``--device``: the plain path's device, or
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


def _saved(config):
    return {k: config[k] for k in (*CONFIG_KEYS, "image_shape", "devices") if k in config}


def train(args):
    cli_options.check_paths(args)
    device = _processes(args)
    path = os.path.join(args.out, "checkpoint.pt")
    state = None
    if args.resume:
        state = load_checkpoint(path)
        config = _complete({"steps": state["step"], **state["config"]})
        if config.get("devices", 1) != args.devices:
            raise ValueError(f"{path} was trained with --devices {config.get('devices', 1)}")
        print(f"resuming {config['loss']} on {config['dataset']} from step {state['step']}")
        x_train, _ = _data(config, args, device or "cpu")
    else:
        resolve_losses([args.loss], args.latent, args.model)
        values = {**vars(args), "loss": args.loss}
        x_train, _ = _data(values, args, device or "cpu")
        config = resolve_config(values, x_train)
        if device is None:
            config["devices"] = args.devices
    spec = get_objective(config["loss"])
    with num_threads(1), pyro.settings.context(module_local_params=device is None):
        pyro.clear_param_store()
        pyro.set_rng_seed(config["seed"])
        built = spec.build(config, x_train)
    resumed_to = None if args.steps is None else args.steps * built.steps_per_batch
    steps = built.steps if resumed_to is None or not args.resume else resumed_to
    if device is None:  # several processes: Lightning (the [lightning] extra)
        from .lightning import train_command

        args.steps = steps
        with pyro.settings.context(module_local_params=True):
            train_command(built.model, built.guide, built.loss, x_train, _saved(config), args)
        print(f"trained {config['loss']} to step {steps}; checkpoint: {path}")
        return built.model, built.guide
    start = 0
    if state is not None:
        prepare = getattr(built.loss, "prepare", None)  # builds modules a loss creates lazily
        if callable(prepare):
            prepare(built.model, built.guide, x_train[: config["batch_size"]])
        restore(state, model=built.model, guide=built.guide, optim=built.optim, loss=built.loss)
        start = state["step"]
    saved = _saved(config)

    def checkpoint(step):
        if step % args.checkpoint_every == 0 or step == steps:
            save_checkpoint(
                path,
                config=saved,
                step=step,
                model=built.model,
                guide=built.guide,
                optim=built.optim,
                loss=built.loss,
            )

    built.steps = steps
    threads = _threads(args, (built.model, built.guide), config["batch_size"])
    with num_threads(threads):
        train_built(
            built,
            x_train,
            config["batch_size"],
            start=start,
            progress=not args.quiet,
            desc=config["loss"],
            callback=checkpoint,
            seed=config["seed"],
        )
    if start >= steps:
        print(f"checkpoint already at step {start} >= --steps {steps}; nothing to do")
    print(
        f"trained {config['loss']} to step {max(start, steps)} ({threads} torch thread(s)); "
        f"checkpoint: {path}"
    )
    return built.model, built.guide


def evaluate(args):
    cli_options.check_paths(args)
    device = _device(args.device)
    state = load_checkpoint(args.checkpoint)
    config = _complete(state["config"])
    try:
        spec = get_objective(config["loss"])
    except ValueError as e:
        raise ValueError(f"{args.checkpoint}: {e}") from None
    dataset = args.dataset or config["dataset"]
    x_train, x_test = _data(config, args, device, dataset)
    with num_threads(1):
        pyro.clear_param_store()
        pyro.set_rng_seed(config["seed"])
        built = spec.build(config, x_train)
        try:
            built.model.load_state_dict(state["model"])
            built.guide.load_state_dict(state["guide"])
        except RuntimeError as e:
            message = str(e).splitlines()[0]
            raise ValueError(
                f"{args.checkpoint}: the data set does not fit this model ({message})"
            ) from e
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    ais_points = args.ais_points or evaluation_defaults(x_test)["ais_points"]
    batch = 8 * min(x_test.shape[0], ais_points)
    with num_threads(_threads(args, (built.model, built.guide), batch)):
        row = {"objective": config["loss"], "step": state["step"], "dataset": dataset}
        row.update(
            evaluate_built(
                built,
                x_test,
                eval_samples=args.eval_samples,
                ais_temperatures=args.ais_temperatures,
                ais_points=ais_points,
            )
        )
    row.update(status="ok", train_seconds=None)
    print(f"{config['loss']} at step {state['step']} on {dataset} ({x_test.shape[0]} points)")
    print(format_table([row]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)
    return row


def build_parser():
    return cli_options.build_parser(OBJECTIVE_NAMES)


COMMANDS = {"compare": compare, "train": train, "evaluate": evaluate}


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except cli_options.UsageError as e:
        print(f"{e.prog}: error: {e.message}", file=sys.stderr)
        return 1
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError, FloatingPointError, ImportError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"pyro-vsm {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
