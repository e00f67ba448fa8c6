"""The shared Metropolis decision, the step-size adaptation and the HMC kernel's invariance."""

import math

import pytest
import torch

from pyro_vsm.samplers import (
    HMCState,
    StepSizeAdaptation,
    autograd_potential,
    hmc_init,
    hmc_kernel,
    metropolis_accept,
    select,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_metropolis_accept_rejects_nan_and_invalid_proposals():
    log_ratio = torch.tensor([math.nan, -math.inf, 0.0, 5.0, -1.0, 0.0])
    valid = torch.tensor([True, True, True, True, True, False])
    prob, accepted = metropolis_accept(log_ratio, gen(), valid=valid)
    torch.testing.assert_close(prob, torch.tensor([0.0, 0.0, 1.0, 1.0, math.exp(-1.0), 0.0]))
    assert accepted[[0, 1, 5]].tolist() == [False, False, False]
    assert accepted[[2, 3]].tolist() == [True, True]
    # the decision is Bernoulli(min(1, e^log_ratio)) per chain
    _, acc = metropolis_accept(torch.full((20000,), math.log(0.3)), gen(1))
    assert abs(acc.double().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20000)


def test_select_keeps_the_structure_per_chain():
    accepted = torch.tensor([True, False])
    new = HMCState(
        torch.ones(2, 3), torch.ones(2, 3), torch.ones(2), torch.ones(2, 3), (torch.ones(2),)
    )
    old = HMCState(*(torch.zeros_like(t) for t in new[:4]), (torch.zeros(2),))
    out = select(accepted, new, old)
    assert isinstance(out, HMCState)
    assert out.position[:, 0].tolist() == [1.0, 0.0] and out.aux[0].tolist() == [1.0, 0.0]
    d = select(accepted, {"a": torch.ones(2, 2, 1)}, {"a": torch.zeros(2, 2, 1)})
    assert d["a"][:, 0, 0].tolist() == [1.0, 0.0]


def test_step_size_adaptation_moves_toward_the_target_rate():
    adapt = StepSizeAdaptation(step_size=0.5, target_accept=0.6, adapt_rate=0.1, jitter=0.2)
    like = torch.zeros((), dtype=torch.float64)
    log_step = adapt.init((3,), like)
    torch.testing.assert_close(log_step.exp(), torch.full((3,), 0.5, dtype=torch.float64))
    accept = torch.tensor([[1.0, 0.6, 0.0]], dtype=torch.float64).expand(4, 3)
    new = adapt.update(log_step, accept)
    assert new[0] > log_step[0] and new[1] == log_step[1] and new[2] < log_step[2]
    torch.testing.assert_close(new - log_step, 0.1 * (accept[0] - 0.6))
    eps = adapt.sample(log_step, (1000,), gen())
    assert eps.shape == (1000, 3)
    assert bool((eps >= 0.4 - 1e-12).all() and (eps <= 0.6 + 1e-12).all())
    assert StepSizeAdaptation(adapt_rate=0.0).update(log_step, accept) is log_step


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_accept=1.0), "target_accept"),
        (dict(target_accept=True), "target_accept"),
        (dict(adapt_rate=-0.1), "adapt_rate"),
        (dict(jitter=1.0), "jitter"),
        (dict(step_size=0.0), "step_size"),
        (dict(step_size=True), "step_size"),
    ],
)
def test_step_size_adaptation_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StepSizeAdaptation(**kwargs)


@pytest.mark.parametrize("persistence, num_steps", [(0.0, 3), (0.8, 1)])
def test_hmc_kernel_leaves_a_correlated_gaussian_invariant(persistence, num_steps):
    # 2000 chains of a 2-d Gaussian (two targets of different scales), started off target
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    scales = torch.tensor([1.0, 3.0], dtype=torch.float64)[:, None]

    def potential(z):
        w = z / scales
        return 0.5 * ((w @ prec) * w).sum(-1)

    fn = autograd_potential(potential)
    state = hmc_init(torch.zeros(2000, 2, 2, dtype=torch.float64), fn, generator=gen(1))
    eps = (0.4 * scales)[None]
    g = gen(2)
    accept = 0.0
    for _ in range(150):
        state, info = hmc_kernel(state, fn, eps, num_steps, persistence=persistence, generator=g)
        accept = accept + info.accept_prob.mean() / 150
    assert 0.5 < float(accept) < 1.0
    for b in range(2):
        z = state.position[:, b] / scales[b]
        # four standard errors of a mean (sd ≤ 1) and of a covariance entry, n = 2000
        torch.testing.assert_close(
            z.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.09, rtol=0
        )
        torch.testing.assert_close(torch.cov(z.T), cov, atol=0.1, rtol=0)
    # the state's potential and gradient are those of its position
    u, g, _ = fn(state.position)
    torch.testing.assert_close(state.potential, u)
    torch.testing.assert_close(state.grad, g)
