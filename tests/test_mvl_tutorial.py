"""docs/mvl.md runs top to bottom (with tiny settings)."""

import math

import torch

from tests.tutorials import tutorial_script

SMOKE_SETTINGS = {"NUM_STEPS": 3, "NUM_DRAWS": 50, "GRID": 20, "MCMC_STEPS": 3}


def test_mvl_tutorial_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the tutorial saves its figure in the working directory
    ns = {"__name__": "tutorial"}
    exec(tutorial_script("mvl.md", SMOKE_SETTINGS, min_blocks=5), ns)
    out = capsys.readouterr().out
    assert set(ns["energies"]) == {"langevin", "ssm"}
    for eps, mean, var_cv, var_plain in ns["rows"]:
        assert math.isfinite(mean)
        if eps <= 1e-3:  # without the control variate the variance grows like 1/ε
            assert var_cv < var_plain
    assert ns["samples"].shape == (2000, 2) and torch.isfinite(ns["samples"]).all()
    assert "held-out J" in out and "variance with CV" in out
