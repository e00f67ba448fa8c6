"""docs/distribution_matching.md runs top to bottom (with tiny settings)."""

import math

import pytest
import torch

from tests.tutorials import tutorial_script

#: the tutorial's cost knobs, shrunk to smoke-test values
SMOKE_SETTINGS = {"NUM_ITERATIONS": 4, "NUM_SURGERY_SAMPLES": 2, "RATIO_STEPS": 5}


def test_distribution_matching_tutorial_runs(capsys):
    ns = {"__name__": "distribution_matching_tutorial"}
    exec(tutorial_script("distribution_matching.md", SMOKE_SETTINGS, min_blocks=7), ns)
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
