import importlib.util
import json
import pathlib


def test_mvl_benchmark_smoke(tmp_path):
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "mvl.py"
    spec = importlib.util.spec_from_file_location("mvl_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(["--smoke", "--out", str(tmp_path / "m.json")])
    saved = json.loads((tmp_path / "m.json").read_text())
    for setting in ("banana", "mlp-64"):
        assert result["settings"][setting]["ratio_to_ssm"]["ssm"] == 1.0
        assert set(saved["settings"][setting]["ratio_to_ssm"]) == {"ssm", "mvl", "dsm", "cd1"}
