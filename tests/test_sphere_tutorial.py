"""docs/sphere.md runs top to bottom (with tiny settings)."""

import math

import torch

from tests.tutorials import tutorial_script

SMOKE_SETTINGS = {"NUM_STEPS": 3, "GRID": 20, "NUM_SAMPLES": 50, "MCMC_STEPS": 3}


def test_sphere_tutorial_runs(capsys):
    ns = {"__name__": "tutorial"}
    exec(tutorial_script("sphere.md", SMOKE_SETTINGS, min_blocks=5), ns)
    out = capsys.readouterr().out
    assert math.isfinite(ns["kl"]) and ns["kl"] >= -1e-6
    assert math.isfinite(ns["kl_vmf"])
    samples = ns["samples"]
    assert samples.shape == (50, 3) and torch.allclose(
        samples.norm(dim=-1), torch.ones(50).double()
    )
    assert "KL(p || q)" in out and "acceptance" in out
