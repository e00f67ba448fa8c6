"""Schedules, options, the AIS loop and the traced potential."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vsm.evaluation._tracing import inspect_model
from pyro_vsm.evaluation.ais import _likelihood_problem
from pyro_vsm.samplers import AISOptions, annealing_schedule, run_ais
from pyro_vsm.samplers._trace import trace_function
from pyro_vsm.samplers.ais_driver import annealed_importance_sampling
from pyro_vsm.samplers.ais_options import kernel_settings
from pyro_vsm.samplers.annealing import (
    autograd_target,
    check_schedule,
    pilot_length,
    thermodynamic_schedule,
)


def assert_valid_schedule(betas, num_targets):
    assert betas.dim() == 2 and betas.shape[1] == num_targets
    assert bool((betas[0] == 0).all()) and bool((betas[-1] == 1).all())
    assert bool((betas[1:] > betas[:-1]).all())


def test_thermodynamic_schedule_matches_closed_forms():
    grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
    # column 0: constant sqrt(Var) -> evenly spaced; column 1: sqrt(Var) = 1/(a + beta) ->
    # Lambda(beta) = log((a + beta)/a), so beta_t = a((1 + 1/a)^(t/T) - 1)
    a = 0.05
    var = torch.stack([torch.ones_like(grid), (a + grid) ** -2], 1)
    betas = thermodynamic_schedule(grid, var, 10)
    assert_valid_schedule(betas, 2)
    t = torch.arange(11, dtype=torch.float64) / 10
    torch.testing.assert_close(betas[:, 0], t, atol=1e-9, rtol=0)
    torch.testing.assert_close(betas[:, 1], a * ((1 + 1 / a) ** t - 1), atol=1e-3, rtol=0)


def test_thermodynamic_schedule_survives_degenerate_variances():
    grid = torch.linspace(0, 1, 6, dtype=torch.float64)
    var = torch.zeros(6, 3, dtype=torch.float64)
    var[2, 1] = math.nan
    var[:, 2] = torch.tensor([4.0, math.inf, 1.0, 0.0, 0.0, 0.0])
    assert_valid_schedule(thermodynamic_schedule(grid, var, 7), 3)


def test_check_schedule():
    like = torch.zeros((), dtype=torch.float64)
    betas = check_schedule(torch.tensor([0.0, 0.5, 1.0]), 4, like)
    assert betas.shape == (3, 4) and betas.dtype == torch.float64
    for bad in (torch.tensor([0.0, 0.5, 0.5, 1.0]), torch.tensor([0.1, 1.0]), torch.zeros(3, 2)):
        with pytest.raises(ValueError, match="schedule"):
            check_schedule(bad, 4, like)


@pytest.mark.parametrize("schedule", ["sigmoid", "linear"])
def test_fixed_schedules(schedule):
    betas = annealing_schedule(10, schedule, dtype=torch.float64)
    assert_valid_schedule(betas[:, None], 1)
    with pytest.raises(ValueError, match="schedule"):
        annealing_schedule(10, "adaptive")


def test_options_resolve_and_validate():
    default = kernel_settings(AISOptions())
    assert default == (1, 10, 0.0, 0.8, True)
    # one 10-step trajectory per temperature, fresh momentum, jittered step: the classic kernel
    assert kernel_settings(AISOptions(num_leapfrog=10)) == (10, 1, 0.5, 0.0, False)
    options = AISOptions(num_leapfrog=2, persistence=0.5, search_step_size=True)
    assert kernel_settings(options) == (2, 5, 0.5, 0.5, True)
    options = AISOptions(num_chains=8).replace(num_chains=None, num_temperatures=30)
    assert options.num_chains == 8 and options.num_temperatures == 30
    assert pilot_length(1000, AISOptions()) == (50, 950)
    assert pilot_length(100, AISOptions()) == (8, 92)
    assert pilot_length(31, AISOptions()) is None
    for kwargs, match in [
        (dict(num_temperatures=True), "num_temperatures"),
        (dict(num_chains=0), "num_chains"),
        (dict(schedule="cosine"), "schedule"),
        (dict(persistence=1.0), "persistence"),
        (dict(step_size=True), "step_size"),
        (dict(pilot_fraction=0.9), "pilot_fraction"),
        (dict(compile="yes"), "compile"),
        (dict(search_step_size=1), "search_step_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            AISOptions(**kwargs)
    with pytest.raises(ValueError, match="unknown AIS option"):
        AISOptions().replace(num_particles=3)


def gaussian_problem(num_targets=3):
    """f_0 = N(0, I_2); f_1(z) = c_b exp(-|z - m_b|^2 / (2 s_b^2)): log Z = log c_b + log(2 pi s^2)."""
    m = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)[:num_targets]
    s = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)[:num_targets]
    log_c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:num_targets]

    def joint(z):
        log_base = -0.5 * (z * z).sum(-1) - math.log(2 * math.pi)
        log_target = log_c - 0.5 * ((z - m) ** 2).sum(-1) / s**2
        return log_base, log_target

    return joint, log_c + torch.log(2 * math.pi * s**2)


@pytest.mark.parametrize("schedule", ["adaptive", "sigmoid", "per-target"])
def test_annealed_importance_sampling_is_unbiased_and_schedules_are_valid(schedule):
    # exp(log w) is unbiased for Z: the log of the mean weight over 256 chains is within four
    # standard errors (delta method) of log Z for every target, with chunks of chains
    joint, log_z = gaussian_problem()
    pyro.set_rng_seed(0)
    betas = schedule
    if schedule == "per-target":
        betas = torch.stack(
            [
                annealing_schedule(100, k, dtype=torch.float64)
                for k in ("sigmoid", "linear", "sigmoid")
            ],
            1,
        )
    options = AISOptions(num_temperatures=100, schedule=betas, chain_chunk_size=128)
    run = annealed_importance_sampling(
        lambda c: torch.randn(c, 3, 2, dtype=torch.float64),
        lambda c: autograd_target(joint),
        256,
        options,
    )
    assert run.log_weights.shape == (256, 3) and run.num_temperatures == 100
    assert_valid_schedule(run.betas, 3)
    if schedule == "adaptive":  # the pilot took 8 of the 100 temperatures
        assert run.betas.shape[0] == 93
    w = (run.log_weights - run.log_weights.max(0).values).exp()
    est = torch.log(w.mean(0)) + run.log_weights.max(0).values
    stderr = w.std(0) / w.mean(0) / math.sqrt(256)
    assert bool(((est - log_z).abs() < 4 * stderr + 1e-3).all()), (est - log_z, stderr)
    assert bool(((run.acceptance_rate > 0.4) & (run.acceptance_rate < 0.95)).all())


@pytest.mark.parametrize("num_chains,chunk", [(4, 1), (1, None)])
def test_adaptive_pilot_needs_two_chains(num_chains, chunk, recwarn):
    # one chain per chunk: the pilot still measures the variance over two chains; a single
    # chain in all: no variance to measure, so the sigmoid schedule (not a degenerate one)
    joint, _ = gaussian_problem()
    pyro.set_rng_seed(0)
    options = AISOptions(num_temperatures=100, chain_chunk_size=chunk)
    drawn = []

    def init_fn(c):
        drawn.append(c)
        return torch.randn(c, 3, 2, dtype=torch.float64)

    run = annealed_importance_sampling(
        init_fn, lambda c: autograd_target(joint), num_chains, options
    )
    assert not [w for w in recwarn if "degrees of freedom" in str(w.message)]
    assert_valid_schedule(run.betas, 3)
    if num_chains == 1:
        torch.testing.assert_close(run.betas[:, 0], annealing_schedule(100, dtype=torch.float64))
    else:
        assert drawn[0] == 2 and run.betas.shape[0] == 93  # the pilot: 2 chains, 8 temperatures
        linear = torch.linspace(0, 1, 93, dtype=torch.float64)
        assert (run.betas[:, 0] - linear).abs().max() > 0.05  # shaped by the measured variance


def test_run_ais_records_the_variance_along_the_path():
    joint, _ = gaussian_problem(1)
    pyro.set_rng_seed(1)
    betas = annealing_schedule(30, dtype=torch.float64)
    res = run_ais(
        torch.randn(64, 1, 2, dtype=torch.float64),
        autograd_target(joint),
        betas,
        record_variance=True,
    )
    assert res.variances.shape == (30, 1) and bool((res.variances > 0).all())


def test_traced_target_matches_the_model_and_falls_back_on_control_flow():
    # a constrained latent (Gamma) and a guide: the traced target equals the model's own
    def model(x):
        with pyro.plate("data", x.shape[0]):
            rate = pyro.sample("rate", dist.Gamma(torch.full_like(x, 2.0), 2.0))
            pyro.sample("x", dist.Normal(0.0, rate.rsqrt()), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("rate", dist.LogNormal(torch.zeros_like(x), 0.5))

    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    info = inspect_model(model, guide, (x,), {})
    init_fn, make_target = _likelihood_problem(model, guide, (x,), {}, info, 1.0)
    z, target = init_fn(4), make_target(4)
    assert z.shape == (4, 3, 1)
    beta = torch.full((3,), 0.3, dtype=torch.float64)
    traced = trace_function(target, z, beta)
    assert traced is not None
    for a, b in zip(traced(z + 0.1, beta * 2), target(z + 0.1, beta * 2), strict=True):
        torch.testing.assert_close(a, b)

    def branching(z, beta):
        return (z.sum(-1) if bool((z > 0).all()) else -z.sum(-1),)

    def noisy(z, beta):
        return (z.sum(-1) + torch.randn_like(z.sum(-1)),)

    assert trace_function(branching, z, beta) is None
    assert trace_function(noisy, z, beta) is None


def test_ais_benchmark_smoke(tmp_path):
    import importlib.util
    import json
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "ais.py"
    spec = importlib.util.spec_from_file_location("ais_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(["--smoke", "--out", str(tmp_path / "ais.json")])
    saved = json.loads((tmp_path / "ais.json").read_text())
    assert {r["kernel"] for r in saved["quality"]} == {"default", "classic", "perfect"}
    assert set(result["throughput"]) == {"default", "default_adaptive", "default_eager", "classic"}
    assert all(r["median_ratio"] > 0 for r in result["throughput"].values())
