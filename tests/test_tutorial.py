"""docs/tutorial.md runs top to bottom (with tiny settings), so the tutorial cannot rot."""

import math

import pyro
import pytest
import torch

from tests.tutorials import tutorial_script

#: the tutorial's cost knobs, shrunk to smoke-test values
SMOKE_SETTINGS = {
    "NUM_STEPS": 3,
    "NUM_SAMPLES": 16,
    "NUM_TEMPERATURES": 3,
    "NUM_CHAINS": 2,
}

FITS = ("ELBO", "M1 (KL)", "M1 (Fisher)")


def _assert_finite_per_point(estimates, num_points):
    assert set(estimates) == set(FITS)
    for name, values in estimates.items():
        assert values.shape == (num_points,), name
        assert torch.isfinite(values).all(), name


# with a handful of importance samples k̂ is inf, and ArviZ's k̂ minus it is nan
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_tutorial_runs(capsys):
    ns = {"__name__": "tutorial"}
    exec(tutorial_script("tutorial.md", SMOKE_SETTINGS, min_blocks=8), ns)
    out = capsys.readouterr().out

    n_test = ns["x_test"].shape[0]
    for key in ("is_ll", "wide_ll", "ais_ll"):
        _assert_finite_per_point(ns[key], n_test)
    for name in FITS:
        d = ns["is_diag"][name]
        assert d.log_weights.shape == (SMOKE_SETTINGS["NUM_SAMPLES"], n_test)
        assert ((d.ess >= 1 - 1e-4) & (d.ess <= SMOKE_SETTINGS["NUM_SAMPLES"] + 1e-4)).all()
        assert d.khat.shape == (n_test,)
        a = ns["ais_diag"][name]
        assert a.log_weights.shape == (SMOKE_SETTINGS["NUM_CHAINS"], n_test)
        assert ((a.acceptance_rate >= 0) & (a.acceptance_rate <= 1)).all()
        assert torch.isfinite(a.stderr).all()
    assert torch.isfinite(ns["narrow_ll"]).all()
    for prefix in ("elbo", "m1_kl", "m1_fisher"):
        assert math.isfinite(pyro.param(f"{prefix}_log_gamma").item())
    assert ns["arviz"] is None or "exported" in ns

    for text in ("-ELBO per point", "M1 (kl)", "M1 (fisher)", "narrow proposal", "posterior FD"):
        assert text in out
