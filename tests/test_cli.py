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


def test_benchmark_smoke(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"
    spec = importlib.util.spec_from_file_location("step_time", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(["--smoke", "--device", "cpu", "--out", str(tmp_path / "b.json")])
    assert result["ratio_to_trace_elbo"]["Trace_ELBO"] == 1.0
    assert json.loads((tmp_path / "b.json").read_text())["setting"]["batch"] == 128
