r"""``pyro-vsm compare``: every objective trained on the same data and evaluated on the same
held-out metrics, each in its own single-threaded worker process."""

import importlib.util
import json
import os
import sys
import time

import pyro
import torch

from ..datasets.files import image_shape, load_dataset
from .config import evaluation_defaults, resolve_config
from .evaluate import evaluate_built
from .figures import FigureBuilder, figure_data, save_figure
from .progress import Progress, Throttle
from .registry import get_objective, objective_names
from .report import format_markdown, format_table, notes, papers_markdown
from .runner import Task, run_tasks, shared
from .training import available_cores, num_threads, train_built

__all__ = ["resolve_losses", "run_compare", "run_objective"]


def resolve_losses(names, latent="gaussian", model="mlp"):
    r"""The objective names to run: ``all`` expands to every registered objective that supports
    ``latent`` and ``model``; an explicit name that does not is a ``ValueError``.

    :param names: names from the command line.
    :param str latent: ``--latent``.
    :param str model: ``--model``.
    """
    out = []
    for name in names:
        if name == "all":
            out += [n for n in objective_names(latent, model) if n not in out]
            continue
        spec = get_objective(name)
        if latent not in spec.latents:
            raise ValueError(
                f"loss {name!r} does not support --latent {latent} (it supports "
                f"{', '.join(spec.latents)}); with --latent {latent} choose from "
                f"{', '.join(objective_names(latent, model))}"
            )
        if model not in spec.models:
            raise ValueError(f"loss {name!r} does not support --model {model}")
        if name not in out:
            out.append(name)
    return out


def _diverged(built, error):
    r"""Whether a training error comes from non-finite values: a parameter that is not finite,
    or a distribution's check rejecting NaN/inf arguments (e.g. overflowing activations)."""
    if built is None:
        return False
    if "invalid values" in str(error):  # torch's constraint check of distribution arguments
        return True
    params = list(built.model.parameters()) + list(built.guide.parameters())
    params += [p for _, p in pyro.get_param_store().named_parameters()]
    return not all(bool(torch.isfinite(p).all()) for p in params)


def _first_line(e):
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_objective(payload, emit):
    r"""Trains and evaluates one objective (the worker of :func:`run_compare`).

    Pyro's and torch's argument validation is off here (about 5 % of the time): the models are
    the library's own, and non-finite values are caught by the losses' finiteness checks, by
    the training loop's check of every step's value and by the metrics' own checks. Denormal
    floats are flushed to zero (about 7 % of the AIS time on the 2-D VAE; values below 1e-38
    in float32 do not change any reported number).

    :param tuple payload: ``(name, config, options)``.
    :param emit: progress callback.
    :returns: ``(report entry, figure panel data or None)``.
    """
    flush = torch.set_flush_denormal(True)
    try:
        with pyro.validation_enabled(False):
            return _run_objective(payload, emit)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _run_objective(payload, emit):
    name, config, options = payload
    x_train, x_test = shared()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    spec = get_objective(name)
    row = {"objective": name, "family": spec.family, "paper": spec.paper, "status": "ok"}
    pyro.clear_param_store()
    pyro.set_rng_seed(config["seed"])
    built = None
    try:
        built = spec.build(config, x_train)
        row.update(steps=built.steps, settings=built.settings)
        emit(("start", built.steps))
        progress = Throttle(lambda step: emit(("step", step)), built.steps)
        train_built(built, x_train, config["batch_size"], progress=progress, seed=config["seed"])
    except FloatingPointError as e:  # NonFiniteLossError, or a non-finite value of a step
        row.update(status="diverged", diverged=_first_line(e))
    except Exception as e:  # noqa: BLE001 - one objective's failure must not stop the others
        if _diverged(built, e):  # e.g. a distribution rejecting NaN parameters
            row.update(status="diverged", diverged=f"non-finite values ({_first_line(e)})")
        else:
            row.update(status="failed", error=_first_line(e))
    row["train_seconds"] = time.perf_counter() - wall0
    panel = None
    if row["status"] == "ok":
        emit(("phase", "evaluating"))
        wall1 = time.perf_counter()
        try:
            row.update(evaluate_built(built, x_test, **options["evaluation"]))
            if options["figure"]:
                panel = figure_data(built, x_test, row.get("test_nll"), options["image_shape"])
        except Exception as e:  # noqa: BLE001
            row.update(status="failed", error=_first_line(e))
        row["eval_seconds"] = time.perf_counter() - wall1
    row["cpu_seconds"] = time.process_time() - cpu0
    return row, panel


def _summary(row):
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('diverged') or row.get('error')}"
    nll = row.get("test_nll")
    text = f"NLL {nll:.3f}" if nll is not None else "NLL n/a"
    return f"{text} (train {row['train_seconds']:.0f} s, eval {row.get('eval_seconds', 0):.0f} s)"


def _check_out(path, what):
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} exists and is not a folder")


def run_compare(args, device):
    r"""Runs the comparison of the parsed command line ``args`` on ``device``; returns the report
    (a dict, also written to ``args.out``).

    :param args: the parsed ``pyro-vsm compare`` arguments.
    :param torch.device device: where the tensors live.
    """
    names = resolve_losses(args.losses, args.latent, args.model)
    _check_out(args.out, "--out")
    if args.model == "conv" and image_shape(args.dataset) is None:
        raise ValueError(f"--model conv needs an image data set, got {args.dataset!r}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    with num_threads(1):
        x_train, x_test = load_dataset(
            args.dataset,
            args.num_data,
            args.num_test,
            seed=args.seed,
            device=device,
            data_root=args.data_root,
            download=args.download,
            image=args.model == "conv",
        )
        config = resolve_config(vars(args), x_train)
        shape = config["image_shape"]
        jobs = min(args.jobs, len(names))
        print(
            f"dataset {args.dataset}: {x_train.shape[0]} train / {x_test.shape[0]} held-out "
            f"points of shape {tuple(x_train.shape[1:])}, {args.model} nets, {config['latent']} "
            f"latents of size {config['latent_dim']}, hidden {config['hidden']}, device "
            f"{device}, {config['steps']} steps of batch {config['batch_size']}, lr "
            f"{config['lr']}, seed {args.seed}",
            flush=True,
        )
        evaluation = dict(
            eval_samples=args.eval_samples,
            ais_temperatures=args.ais_temperatures,
            ais_points=args.ais_points or evaluation_defaults(x_train)["ais_points"],
        )
        figure_wanted = not args.no_figure
        if figure_wanted and importlib.util.find_spec("matplotlib") is None:
            print(
                "no compare.png: matplotlib is not installed (the [plots] extra)", file=sys.stderr
            )
            figure_wanted = False
        options = {
            "evaluation": evaluation,
            "figure": figure_wanted,
            "image_shape": shape,
        }
        tasks = [
            Task((name, dict(config, loss=name), options), get_objective(name).cost)
            for name in names
        ]
        progress = Progress(names, quiet=args.quiet)
        builder = FigureBuilder(names, x_test, shape) if figure_wanted else None
        figure_error = []

        def finished(i, result):
            progress.done(i, _summary(result[0]))
            if builder is not None and not figure_error:  # drawn while others still run
                try:
                    builder.add(i, result[1])
                except Exception as e:  # noqa: BLE001 - a figure must not cost the results
                    figure_error.append(_first_line(e))

        where = (
            f"{jobs} worker processes" if jobs > 1 else "this process"
        ) + " (1 torch thread each)"
        progress.start(f"training {len(names)} objective(s) in {where}")
        try:
            results = run_tasks(
                run_objective,
                tasks,
                (x_train, x_test),
                jobs,
                on_event=progress.event,
                on_result=finished,
                use_fork=device.type == "cpu",
            )
        finally:
            progress.close()
        rows = [row for row, _ in results]
        table, text = format_table(rows), notes(evaluation, rows)
        print(table)
        print(text)
        os.makedirs(args.out, exist_ok=True)
        figure = None
        if builder is not None and not figure_error:
            try:
                figure = save_figure(builder.finish(), os.path.join(args.out, "compare.png"))
            except Exception as e:  # noqa: BLE001
                figure_error.append(_first_line(e))
        if figure_error:
            print(f"no compare.png: {figure_error[0]}", file=sys.stderr)
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    timing = {
        "wall_seconds": time.perf_counter() - wall0,
        "cpu_seconds": time.process_time() - cpu0 + sum(r["cpu_seconds"] for r in rows),
        "worker_processes": jobs,
        "cores": available_cores(),
        "load_average_before": load0,
        "load_average_after": load1,
    }
    report = {
        "command": "compare",
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "config": config,
        "device": str(device),
        "timing": timing,
        "results": rows,
        "notes": text,
    }
    _write_reports(args, report, rows, text, figure)
    print(
        f"{len(rows)} objective(s) in {timing['wall_seconds']:.1f} s "
        f"({timing['cpu_seconds']:.0f} CPU s, {jobs} worker process(es))"
    )
    return report


def _write_reports(args, report, rows, text, figure):
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    names = [r["objective"] for r in rows]
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(
            f"# pyro-vsm compare: {args.dataset}\n\n{format_markdown(rows)}\n\n{text}\n\n"
            f"## Objectives\n\n{papers_markdown(names)}\n"
        )
    written = ["report.json", "report.md"] + (["compare.png"] if figure else [])
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
