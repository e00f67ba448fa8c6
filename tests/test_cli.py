import json

import numpy as np
import pytest
import torch

from pyro_vsm.checkpoint import load_checkpoint
from pyro_vsm.cli import build_parser, main
from pyro_vsm.datasets.files import load_dataset

SMALL = [
    "--steps",
    "6",
    "--num-data",
    "64",
    "--num-test",
    "24",
    "--eval-samples",
    "20",
    "--ais-temperatures",
    "4",
    "--ais-points",
    "8",
    "--batch-size",
    "16",
    "--quiet",
]


def test_compare_smoke(tmp_path, capsys):
    out = tmp_path / "r.json"
    losses = ["elbo", "m1-kl", "m1-fisher", "m2-kl", "m3-kl", "joint-fisher"]
    code = main(
        ["compare", *SMALL, "--losses", *losses, "--json", str(out), "--out", str(tmp_path / "cmp")]
    )
    assert code == 0
    text = capsys.readouterr().out
    for name in losses:
        assert name in text
    rows = json.loads(out.read_text())["results"]
    assert [r["objective"] for r in rows] == losses
    for r in rows:
        for key in (
            "test_nll",
            "test_nll_ais",
            "test_score_matching",
            "mmd_to_test",
            "reconstruction_mse",
            "marginal_kl",
        ):
            assert abs(r[key]) < 1e6, (r["objective"], key)
    for name in ("report.json", "report.md", "compare.png"):
        assert (tmp_path / "cmp" / name).is_file()


def test_defaults_are_the_documented_comparison():
    args = build_parser().parse_args(["compare"])
    assert args.losses == ["elbo", "m1-kl", "m1-fisher", "m2-kl", "m3-kl", "joint-fisher"]
    assert args.dataset == "mixture" and args.device == "auto"


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "loss", ["m1-kl", "elbo", "adversarial-prior", "lagging", "vgh++", "implicit-sphere"]
)
def test_resume_gives_the_same_parameters(tmp_path, loss):
    common = [
        "--loss",
        loss,
        "--num-data",
        "64",
        "--num-test",
        "16",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--quiet",
        "--checkpoint-every",
        "5",
    ]
    assert main(["train", *common, "--steps", "10", "--out", str(tmp_path / "a")]) == 0
    whole = load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))
    assert main(["train", *common, "--steps", "5", "--out", str(tmp_path / "b")]) == 0
    half = load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))
    cycle = 4 if loss == "vgh++" else 1  # --steps counts VGH's cycles (4 svi.step calls)
    assert half["step"] == 5 * cycle
    assert (
        main(["train", "--resume", "--steps", "10", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    )
    resumed = load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))
    assert resumed["step"] == whole["step"] == 10 * cycle
    for group in ("model", "guide"):
        for k, v in whole[group].items():
            assert torch.equal(v, resumed[group][k]), (group, k)
    if loss != "elbo":  # the loss state (schedule, owned modules such as the flow) resumes too
        assert resumed["loss"]["schedule"] == whole["loss"]["schedule"]
        for group, modules in whole["loss"]["modules"].items():  # e.g. the discriminators
            for k, v in modules.items():
                assert torch.equal(v, resumed["loss"]["modules"][group][k]), (group, k)


def test_evaluate_a_checkpoint(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--steps",
                "4",
                "--num-data",
                "64",
                "--num-test",
                "16",
                "--batch-size",
                "16",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = tmp_path / "e.json"
    code = main(
        [
            "evaluate",
            str(tmp_path / "checkpoint.pt"),
            "--eval-samples",
            "20",
            "--ais-temperatures",
            "3",
            "--ais-points",
            "4",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    row = json.loads(out.read_text())
    assert row["step"] == 4 and row["objective"] == "m1-kl" and abs(row["test_nll"]) < 1e6


def test_user_files(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 3))
    np.save(tmp_path / "d.npy", data)
    np.savez(tmp_path / "d.npz", x=data)
    np.savetxt(tmp_path / "d.csv", data, delimiter=",", header="a,b,c", comments="")
    for name in ("d.npy", "d.npz", "d.csv"):
        train, test = load_dataset(str(tmp_path / name), seed=1, dtype=torch.float64)
        assert train.shape == (40, 3) and test.shape == (10, 3)
        both = torch.cat([train, test]).numpy()
        assert np.allclose(np.sort(both, 0), np.sort(data, 0))
    assert (
        main(
            [
                "train",
                "--dataset",
                str(tmp_path / "d.csv"),
                "--steps",
                "2",
                "--batch-size",
                "8",
                "--quiet",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["compare", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["compare", "--losses", "elbo", "m9"], "unknown loss 'm9'"),
        (["train", "--dataset", "missing.npy"], "data file not found: missing.npy"),
        (["evaluate", "no/such/checkpoint.pt"], "checkpoint not found"),
        (["train", "--resume", "--out", "no/such/run"], "checkpoint not found"),
        # torchvision data: a clear line whether torchvision is missing or the files are
        (["train", "--dataset", "mnist", "--data-root", "no/such/dir"], "mnist"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_corrupt_checkpoint_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert main(["evaluate", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable pyro-vsm checkpoint" in err[0]
    # a pickled arbitrary object is refused by weights_only loading
    torch.save({"format": "pyro-vsm-checkpoint", "evil": object()}, bad)
    assert main(["evaluate", str(bad)]) == 1
    assert "not a readable pyro-vsm checkpoint" in capsys.readouterr().err


def test_module_entry_point():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pyro_vsm", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("compare", "train", "evaluate"):
        assert command in out


def _load_benchmark(name):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_smoke(tmp_path):
    mod = _load_benchmark("step_time")
    result = mod.main(["--smoke", "--device", "cpu", "--out", str(tmp_path / "b.json")])
    assert result["ratio_to_trace_elbo"]["Trace_ELBO"] == 1.0
    assert json.loads((tmp_path / "b.json").read_text())["setting"]["batch"] == 128


def test_evaluation_benchmark_smoke(tmp_path):
    mod = _load_benchmark("evaluation")
    result = mod.main(["--smoke", "--device", "cpu", "--out", str(tmp_path / "e.json")])
    saved = json.loads((tmp_path / "e.json").read_text())
    assert [r["num_temperatures"] for r in saved["ais_from_prior"]] == [3, 6]
    assert [r["num_samples"] for r in result["importance_sampling"]] == [10, 50]


def test_digits_through_the_command(tmp_path):
    pytest.importorskip("sklearn")
    train, test = load_dataset("digits", seed=0)
    assert (
        train.shape[1] == test.shape[1] == 64 and 0 <= float(train.min()) < float(train.max()) <= 1
    )
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--steps",
                "2",
                "--batch-size",
                "16",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )


NUMERIC_OPTIONS = {
    # option: bad values (every numeric option of compare/train; parse-time checks)
    "--num-data": ["0", "1", "-5", "abc", "2.5"],
    "--num-test": ["0", "1", "x"],
    "--seed": ["-1", "1.5", "seed"],
    "--latent-dim": ["0", "-2", "two"],
    "--hidden": ["0", "-30", "30.5"],
    "--steps": ["-1", "0", "1e3", ""],
    "--batch-size": ["0", "-1", "big"],
    "--lr": ["0", "-1e-3", "nan", "inf", "fast"],
    "--particles": ["0", "-1", "many"],
    "--guide-steps": ["-1", "one"],
    "--bilevel-steps": ["-1", "0.5"],
    "--temperature": ["0", "-0.5", "nan", "inf", "hot"],
    "--gamma-init": ["0", "-1", "nan", "small"],
}
EVALUATION_OPTIONS = {
    "--eval-samples": ["0", "1", "-10", "lots"],
    "--ais-temperatures": ["0", "-1", "x"],
    "--ais-points": ["0", "-1", "x"],
}
BAD_VALUES = (
    [("compare", o, v) for o, vs in {**NUMERIC_OPTIONS, **EVALUATION_OPTIONS}.items() for v in vs]
    + [("compare", "--jobs", v) for v in ("0", "-2", "all")]
    + [("train", o, v) for o, vs in NUMERIC_OPTIONS.items() for v in vs[:2]]
    + [("train", "--checkpoint-every", v) for v in ("0", "-1", "often")]
    + [("train", "--threads", v) for v in ("0", "-1", "many")]
    + [("evaluate", o, v) for o, vs in EVALUATION_OPTIONS.items() for v in vs]
    + [("evaluate", "--seed", "-3"), ("evaluate", "--threads", "0")]
    + [(c, o, "nope") for c in ("compare", "train") for o in ("--model", "--latent")]
    + [(c, "--device", "tpu9") for c in ("compare", "train", "evaluate")]
    + [("train", "--devices", v) for v in ("0", "-1", "two")]
    + [("train", "--accelerator", "tpu"), ("train", "--strategy", "fsdp")]
)


@pytest.mark.parametrize("command,option,value", BAD_VALUES)
def test_every_bad_option_value_is_one_line_and_status_1(command, option, value, capsys):
    argv = [command] + (["some.pt"] if command == "evaluate" else [])
    argv += [option, value, "--quiet"] if command != "evaluate" else [option, value]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"pyro-vsm {command}: error:"), err[0]
    assert option in err[0] or "device" in err[0], err[0]


@pytest.fixture
def paths(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    return {"FILE": str(a_file), "DIR": str(tmp_path), "MISSING": str(tmp_path / "no" / "x.json")}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["compare", "--out", "FILE"], "--out"),
        (["compare", "--json", "DIR"], "--json"),
        (["compare", "--json", "MISSING"], "--json"),
        (["compare", "--data-root", "FILE"], "--data-root"),
        (["compare", "--dataset", "MISSING"], "data file not found"),
        (["compare", "--dataset", "FILE"], "unsupported file type"),
        (["train", "--out", "FILE"], "--out"),
        (["train", "--data-root", "FILE"], "--data-root"),
        (["train", "--resume", "--out", "DIR"], "checkpoint not found"),
        (["evaluate", "MISSING"], "checkpoint not found"),
        (["evaluate", "DIR"], "checkpoint not found"),
        (["evaluate", "FILE"], "not a readable pyro-vsm checkpoint"),
        (["evaluate", "FILE", "--json", "DIR"], "--json"),
        (["compare", "--model", "conv"], "--model conv needs an image data set"),
        (["compare", "--losses", "all", "m9"], "unknown loss 'm9'"),
        (["train", "--loss", "m9"], "unknown loss 'm9'"),
        (["compare", "--dataset", "nope"], "nope"),
        (["compare", "--losses", "ssm-prior", "--latent", "binary"], "--latent binary"),
        (["train", "--loss", "implicit-sphere", "--model", "conv"], "does not support --model conv"),
    ],
)
def test_every_bad_path_is_one_line_and_status_1(argv, message, paths, capsys):
    argv = [paths.get(a, a) for a in argv] + (["--quiet"] if argv[0] != "evaluate" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err


def test_train_and_evaluate_accept_every_loss(tmp_path, capsys):
    from pyro_vsm.experiments import objective_names

    for name in objective_names():
        out = tmp_path / name
        common = ["--num-data", "32", "--num-test", "8", "--hidden", "6"]
        argv = ["train", "--loss", name, "--steps", "3", "--batch-size", "8", *common]
        assert main([*argv, "--quiet", "--out", str(out)]) == 0, name
        state = load_checkpoint(str(out / "checkpoint.pt"))
        cycle = {"aae": 3, "vgh": 4, "vgh++": 4}.get(name, 1)  # --steps counts their cycles
        assert state["config"]["loss"] == name and state["step"] == 3 * cycle
        if name not in ("elbo", "vampprior", "explicit-sphere"):  # Trace_ELBO has no state
            assert state["loss"] is not None and "schedule" in state["loss"], name
        json_path = tmp_path / f"{name}.json"
        evaluate = ["evaluate", str(out / "checkpoint.pt"), "--eval-samples", "4"]
        evaluate += ["--ais-temperatures", "2", "--ais-points", "2", "--json", str(json_path)]
        assert main(evaluate) == 0, name
        row = json.loads(json_path.read_text())
        assert row["objective"] == name and not row["errors"], (name, row["errors"])
        assert row["test_nll_ais"] is not None, name
        assert (row["test_nll"] is None) == ("implicit" in name), name  # no q(z|x) density
        if row["test_nll"] is None:
            assert "no density" in row["not_applicable"]["test_nll"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--latent", "binary", "--loss", "m1-kl"],
        ["--dataset", "digits", "--model", "conv", "--loss", "ssm-prior", "--hidden", "4"],
    ],
)
def test_train_and_evaluate_binary_and_conv(tmp_path, extra):
    if "digits" in extra:
        pytest.importorskip("sklearn")
    argv = ["train", *extra, "--steps", "3", "--batch-size", "8", "--num-data", "32", "--quiet"]
    assert main([*argv, "--num-test", "8", "--out", str(tmp_path)]) == 0
    state = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert state["config"]["latent"] == extra[1] or state["config"]["model"] == "conv"
    out = tmp_path / "e.json"
    evaluate = ["evaluate", str(tmp_path / "checkpoint.pt"), "--eval-samples", "4"]
    assert main([*evaluate, "--ais-temperatures", "2", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["test_nll"] is not None and not row["errors"]
    if "binary" in extra:
        assert row["test_nll_ais"] is None and "HMC" in row["not_applicable"]["test_nll_ais"]
    else:
        assert row["log_z_method"] == "exact" and row["test_nll_ais"] is not None
