"""docs/distribution_matching.md runs top to bottom (with tiny settings)."""

import math
import pathlib

import pytest
import torch

import pyro_vsm.evaluation
from tests.common import markdown_script

TUTORIAL = pathlib.Path(__file__).resolve().parents[1] / "docs" / "distribution_matching.md"

#: the tutorial's cost knobs, shrunk to smoke-test values
SMOKE_SETTINGS = {"NUM_ITERATIONS": 4, "NUM_SURGERY_SAMPLES": 2, "RATIO_STEPS": 5}

#: the sample-based KL estimators (Algorithms 3 and 4) land on another branch
NEEDED = ("aggregate_posterior_samples", "density_ratio_kl")


@pytest.mark.skipif(
    not all(hasattr(pyro_vsm.evaluation, name) for name in NEEDED),
    reason="needs pyro_vsm.evaluation.density_ratio_kl and aggregate_posterior_samples",
)
def test_distribution_matching_tutorial_runs(capsys):
    ns = {"__name__": "distribution_matching_tutorial"}
    exec(compile(markdown_script(TUTORIAL, SMOKE_SETTINGS, 7), str(TUTORIAL), "exec"), ns)
    out = capsys.readouterr().out
    results = ns["results"]
    assert list(results) == ["VAE", "AAE", "VGH++"]
    n = ns["N"]
    for label, row in results.items():
        finite = {k: v for k, v in row.items() if not (k == "online KL" and label == "VAE")}
        assert all(math.isfinite(v) for v in finite.values()), (label, row)
        assert 0 <= row["I(x;z)"] <= math.log(n) + 1e-4
        assert row["bound"] == pytest.approx(row["avg KL"] - math.log(n))
        assert 0 <= row["clf acc"] <= 1 and row["mean σ"] > 0
    for name in ("aae.code_discriminator", "vgh.code_discriminator", "vgh.data_discriminator"):
        assert any(k.startswith(name) for k in ns["pyro"].get_param_store().keys()), name
    assert "code discriminator accuracy" in out and "ratio KL" in out
    assert isinstance(ns["vgh_loss"].code_discriminator, torch.nn.Module)
