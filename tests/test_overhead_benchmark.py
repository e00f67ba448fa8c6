"""benchmarks/overhead.py: its smoke run, and that its hand-written twins compute what the
library's losses compute (a floor or reference of another algorithm would make the ratios
meaningless)."""

import importlib.util
import json
import pathlib

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vsm import M1Loss


@pytest.fixture(scope="module")
def bench():
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"
    spec = importlib.util.spec_from_file_location("overhead_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _vae(bench):
    pyro.clear_param_store()
    torch.manual_seed(0)
    return bench.VAE(3, (8,), 2)


def _seeded(seed, fn):
    torch.manual_seed(seed)
    return fn()


def test_overhead_smoke(bench, tmp_path):
    losses = ["Trace_ELBO", "M1Loss(kl)", "JointFisherLoss"]
    out = tmp_path / "o.json"
    result = bench.main(["--smoke", "--settings", "small", "--losses", *losses, "--out", str(out)])
    rows = json.loads(out.read_text())["settings"]["small"]["cycles"]
    assert set(rows) == set(losses) == set(result["settings"]["small"]["cycles"])
    for name, row in rows.items():
        assert row["reference_ms"] > 0 and row["ratio"] > 0 and row["ratio_svi_foreach"] > 0
        # the Pyro floor exists for the cases it implements, and only for those
        assert ("ratio_pyro_floor" in row) == (name != "JointFisherLoss")


def test_floor_negative_elbo_is_trace_elbo(bench):
    vae = _vae(bench)
    x = torch.randn(5, 3)
    floor = bench.PyroFloor(vae)
    floor.negative_elbo(x)  # creates the parameters and optimizers
    expected = _seeded(1, lambda: Trace_ELBO().loss(vae.model, vae.guide, x))
    assert _seeded(1, lambda: floor.negative_elbo(x).item()) == pytest.approx(expected, rel=1e-6)


def test_floor_model_objective_is_m1_model_step(bench):
    vae = _vae(bench)
    x = torch.randn(5, 3)
    floor = bench.PyroFloor(vae)
    with torch.no_grad():  # a nonzero log-variance, so that γ's powers are checked
        pyro.param("log_gamma", torch.tensor(0.3))
    loss = M1Loss("kl", guide_steps=0)  # every step is a model step
    floor.negative_elbo(x)
    expected = _seeded(2, lambda: loss.differentiable_loss(vae.model, vae.guide, x).item())
    assert _seeded(2, lambda: floor.m1_model_objective(x).item()) == pytest.approx(
        expected, rel=1e-5
    )


def test_floor_steps_move_only_their_group(bench):
    vae = _vae(bench)
    x = torch.randn(5, 3)
    floor = bench.PyroFloor(vae)

    def snapshot():
        enc = [p.detach().clone() for p in vae.encoder.parameters()]
        dec = [p.detach().clone() for p in vae.decoder.parameters()]
        return enc, dec

    floor.negative_elbo(x)
    enc0, dec0 = snapshot()
    floor.guide_step_kl(x)
    enc1, dec1 = snapshot()
    assert all(torch.equal(a, b) for a, b in zip(dec0, dec1, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(enc0, enc1, strict=True))
    floor.model_step_m1(x)
    enc2, dec2 = snapshot()
    assert all(torch.equal(a, b) for a, b in zip(enc1, enc2, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(dec1, dec2, strict=True))
