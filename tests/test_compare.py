"""``pyro-vsm compare``: every registered objective on one table, worker processes, figures."""

import io
import json
import warnings

import pytest
import torch

from pyro_vsm.cli import main
from pyro_vsm.experiments import (
    METRICS,
    auto_threads,
    data_defaults,
    get_objective,
    objective_names,
    resolve_config,
)
from pyro_vsm.experiments.figures import build_figure, figure_data, tile_images
from pyro_vsm.experiments.progress import Progress

TINY = [
    "--steps",
    "4",
    "--num-data",
    "48",
    "--num-test",
    "16",
    "--eval-samples",
    "8",
    "--ais-temperatures",
    "3",
    "--ais-points",
    "4",
    "--batch-size",
    "16",
    "--hidden",
    "8",
    "--quiet",
]
TIMING = ("train_seconds", "eval_seconds", "cpu_seconds")


def _compare(tmp_path, *extra, name="cmp"):
    out = tmp_path / name
    assert main(["compare", *TINY, *extra, "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def _check_entry(row):
    assert row["status"] == "ok", row
    assert not row["errors"], (row["objective"], row["errors"])
    for metric in METRICS:
        value = row[metric]
        if metric in row["not_applicable"]:
            assert value is None and row["not_applicable"][metric]
        else:
            assert value is not None and abs(value) < 1e6, (row["objective"], metric)


def test_every_registered_objective_runs_in_smoke_mode(tmp_path):
    report = _compare(tmp_path, "--losses", "all", "--jobs", "2", "--no-figure")
    rows = report["results"]
    assert [r["objective"] for r in rows] == list(objective_names("gaussian", "mlp"))
    for row in rows:
        _check_entry(row)
        assert row["paper"] == get_objective(row["objective"]).paper
    energy = [r for r in rows if r["family"] == "energy prior"]
    assert energy and all(
        r["log_z_method"] == "exact" and r["nll_ais_start"] == "guide" for r in energy
    )
    assert report["timing"]["worker_processes"] == 2
    assert (tmp_path / "cmp" / "report.md").read_text().count("`ssm-prior`") == 1


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    losses = ["--losses", "elbo", "m1-kl", "ssm-prior", "aae"]
    one = _compare(tmp_path, *losses, "--jobs", "1", name="one")["results"]
    two = _compare(tmp_path, *losses, "--jobs", "2", name="two")["results"]
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in one]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in two]


def test_binary_latents(tmp_path, capsys):
    rows = _compare(tmp_path, "--latent", "binary", "--losses", "all", "--jobs", "1")["results"]
    assert [r["objective"] for r in rows] == ["elbo", "m1-kl", "m1-fisher"]
    for row in rows:
        _check_entry(row)
        assert "HMC" in row["not_applicable"]["test_nll_ais"]
        assert row["settings"]["temperature"] == 0.5
    capsys.readouterr()
    assert main(["compare", *TINY, "--latent", "binary", "--losses", "ssm-prior"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not support --latent binary" in err[0]


def test_conv_nets_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    conv = ["--dataset", "digits", "--model", "conv", "--losses", "elbo", "vgh++"]
    report = _compare(tmp_path, *conv)  # vgh++: a conv data discriminator
    assert report["config"]["image_shape"] == [1, 8, 8] and report["config"]["hidden"] == [8]
    for row in report["results"]:
        _check_entry(row)
    assert report["results"][1]["settings"]["data_discriminator"] == "conv net"
    assert (tmp_path / "cmp" / "compare.png").is_file()


def test_diverged_run_is_reported(tmp_path):
    report = _compare(tmp_path, "--losses", "elbo", "m1-kl", "--lr", "1e30", "--jobs", "1")
    rows = {r["objective"]: r for r in report["results"]}
    assert any(r["status"] == "diverged" for r in rows.values()), rows
    for row in rows.values():
        if row["status"] == "diverged":
            assert "non-finite" in row["diverged"] or "NonFiniteLossError" in row["diverged"]


def test_figure_problems_never_cost_the_results(tmp_path, monkeypatch, capsys):
    import importlib.util

    from pyro_vsm.experiments import figures

    # no matplotlib: one line, no figure, the report as usual
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else find_spec(n, *a)
    )
    report = _compare(tmp_path, "--losses", "elbo", "--jobs", "1", name="nompl")
    assert report["results"][0]["status"] == "ok"
    assert not (tmp_path / "nompl" / "compare.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err
    monkeypatch.undo()

    # a drawing error: reported in one line, the results kept
    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(figures.FigureBuilder, "add", broken)
    report = _compare(tmp_path, "--losses", "elbo", "m1-kl", "--jobs", "1", name="broken")
    assert [r["status"] for r in report["results"]] == ["ok", "ok"]
    assert not (tmp_path / "broken" / "compare.png").exists()
    assert "no compare.png: RuntimeError: cannot draw" in capsys.readouterr().err


def test_image_figure_structure():
    """Panels: held-out data + (decoded means, reconstruction pairs) per objective; tiles are
    separated by NaN gutters; one grey scale; titles carry the objective and its NLL."""
    x_train = torch.rand(20, 64)
    x_test = torch.rand(12, 64)
    entries = []
    for name in ("elbo", "ssm-prior"):
        config = resolve_config(
            {"dataset": "digits", "model": "mlp", "latent": "gaussian", "seed": 0, "loss": name},
            x_train,
        )
        config.update(num_data=20, particles=1, guide_steps=1, bilevel_steps=0, temperature=0.5)
        built = get_objective(name).build(config, x_train)
        entries.append((name, figure_data(built, x_test, 12.5, (1, 8, 8))))
    entries.append(("m2-kl", None))  # a diverged objective: empty panels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = build_figure(entries, x_test, (1, 8, 8))
    import matplotlib.pyplot as plt

    try:
        axes = fig.axes
        assert len(axes) == 2 * (1 + len(entries))
        images = [ax for ax in axes if ax.images]
        assert len(images) == 1 + 2 * 2  # data panel + two panels per trained objective
        assert {tuple(ax.images[0].get_clim()) for ax in images} == {
            (float(x_test.min()), float(x_test.max()))
        }
        titles = [ax.get_title() for ax in axes]
        assert "elbo\nNLL 12.50" in titles and "held-out data" in titles
        means = images[1].images[0].get_array()
        # 32 decoded 8x8 means in 4 rows of 8, one-pixel NaN gutters between tiles
        assert means.shape == (4 * 9 - 1, 8 * 9 - 1)
        assert means.mask[8, :].all() and means.mask[:, 8].all() and not means.mask[:8, :8].any()
    finally:
        plt.close(fig)


def test_tile_images_gutters():
    grid = tile_images(torch.ones(5, 1, 3, 2), cols=2, gutter=1)
    assert grid.shape == (3 * 4 - 1, 2 * 3 - 1)
    nan = torch.isnan(torch.as_tensor(grid))
    assert nan[3, :].all() and nan[:, 2].all() and nan[8:, 3:].all()  # gutters, missing tile
    assert not nan[:3, :2].any()


def test_progress_on_a_stream_is_a_few_lines(tmp_path, capsys):
    argv = [a for a in TINY if a != "--quiet"]
    assert main(["compare", *argv, "--losses", "elbo", "m1-kl", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "\r" not in err, err
    assert lines[0].startswith("training 2 objective(s)") and lines[2].startswith("[2/2]")


def test_progress_on_a_terminal_is_one_line_per_objective():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(["elbo", "m1-kl"], stream=stream)
    assert progress.mode == "tty"
    progress.start("training")
    progress.event(0, ("start", 10))
    progress.event(0, ("step", 5))
    progress.event(0, ("phase", "evaluating"))
    progress.done(0, "NLL 1.0")
    progress.done(1, "NLL 2.0")
    progress.close()
    text = stream.getvalue()
    assert "NLL 1.0" in text and "NLL 2.0" in text and "elbo" in text
    assert Progress(["elbo"], quiet=True, stream=stream).mode == "off"


def test_threads_for_small_and_large_models():
    small = torch.nn.Linear(2, 30)
    large = torch.nn.Linear(1000, 1000)
    assert auto_threads([small], 200) == 1
    assert auto_threads([large], 200) >= 1
    assert auto_threads([large], 200) == min(8, len(__import__("os").sched_getaffinity(0)))


def test_data_chosen_defaults_and_help(capsys):
    assert data_defaults(2) == {
        "latent_dim": 2,
        "hidden": [30, 30],
        "gamma_init": 1.0,
        "steps": 2000,
        "batch_size": 200,
        "lr": 3e-3,
        "ais_points": 1000,
    }
    digits = data_defaults(64, variance=0.065)
    assert digits["latent_dim"] == 8 and digits["hidden"] == [64, 64]
    assert digits["gamma_init"] == pytest.approx(0.0065) and digits["ais_points"] == 100
    config = resolve_config({"dataset": "digits", "hidden": [5]}, torch.rand(10, 1, 8, 8))
    assert (
        config["hidden"] == [5] and config["latent_dim"] == 8 and config["image_shape"] == [1, 8, 8]
    )
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in (
        "chosen from the data: 2 for 2-D data, 8 for the 8x8 digits",
        "30 30 for 2-D data, 64 64 for the 8x8 digits",
        "elbo m1-kl m1-fisher m2-kl m3-kl joint-fisher",
        "the 'mixture' data with 2000 steps",
    ):
        assert fragment in text, fragment


def test_cycles_share_a_minibatch_and_resume_exactly():
    from pyro_vsm.experiments.training import train_steps

    class Recorder:
        def __init__(self):
            self.batches = []

        def step(self, x, num_data=None):
            self.batches.append(x.clone())
            return 0.0

    x = torch.arange(40.0)[:, None]
    whole, part = Recorder(), Recorder()
    train_steps(whole, x, 9, 5, steps_per_batch=3, seed=4)
    train_steps(part, x, 9, 5, start=4, steps_per_batch=3, seed=4)  # resumed mid-cycle
    b = whole.batches
    assert torch.equal(b[0], b[1]) and torch.equal(b[1], b[2]) and not torch.equal(b[2], b[3])
    assert all(torch.equal(u, v) for u, v in zip(b[4:], part.batches, strict=True))


def test_hybrid_families_give_the_discriminators_their_rate():
    import pyro

    from pyro_vsm.datasets.files import load_dataset
    from pyro_vsm.experiments import train_built

    x, _ = load_dataset("mixture", 32, 8, seed=0)
    values = dict(dataset="mixture", num_data=32, num_test=8, seed=0, model="mlp", steps=1)
    values.update(latent="gaussian", loss="vgh", particles=1, batch_size=8, hidden=[4])
    config = resolve_config(values, x)
    pyro.clear_param_store()
    built = get_objective("vgh").build(config, x)
    assert built.steps == 4 and built.steps_per_batch == 4  # one cycle: 4 groups
    train_built(built, x, 8)
    store = pyro.get_param_store()
    rates = {  # the learning rate of the parameter group that holds each tensor
        store.param_name(p): next(
            g["lr"] for g in o.param_groups if any(q is p for q in g["params"])
        )
        for p, o in built.optim.optim_objs.items()
    }
    disc = {k: v for k, v in rates.items() if "discriminator" in k}
    assert disc and set(disc.values()) == {config["lr"] / 2}
    assert {v for k, v in rates.items() if k not in disc} == {config["lr"]}
