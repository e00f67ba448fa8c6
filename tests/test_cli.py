import json

import pytest

from pyro_vsm.cli import main


def test_compare_smoke(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(
        [
            "compare",
            "--steps",
            "20",
            "--num-data",
            "100",
            "--num-test",
            "50",
            "--eval-samples",
            "20",
            "--losses",
            "elbo",
            "m1-kl",
            "m1-fisher",
            "joint-fisher",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    for name in ["elbo", "m1-kl", "m1-fisher", "joint-fisher"]:
        assert name in text
    rows = json.loads(out.read_text())["results"]
    assert [r["objective"] for r in rows] == ["elbo", "m1-kl", "m1-fisher", "joint-fisher"]
    assert all(abs(r["test_nll"]) < 1e6 for r in rows)


def test_unknown_dataset_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--dataset", "nope"])
    assert e.value.code != 0
    assert "invalid choice" in capsys.readouterr().err


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
