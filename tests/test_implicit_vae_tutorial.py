"""docs/implicit_vae.md runs top to bottom (with tiny settings)."""

import math

from tests.tutorials import tutorial_script

SMOKE_SETTINGS = {
    "NUM_STEPS": 3,
    "HIDDEN": 8,
    "NUM_TEST": 4,
    "NUM_TEMPERATURES": 3,
    "NUM_CHAINS": 2,
}


def test_implicit_vae_tutorial_runs(capsys):
    ns = {"__name__": "tutorial"}
    exec(tutorial_script("implicit_vae.md", SMOKE_SETTINGS, min_blocks=5), ns)
    out = capsys.readouterr().out
    for name in ("nll_implicit", "nll_explicit", "nll_explicit_is"):
        assert math.isfinite(ns[name]) and ns[name] > 0
    assert "implicit VAE: test NLL" in out and "explicit vMF VAE" in out
    assert "conditional_energy" in ns["loss"].owned_modules
