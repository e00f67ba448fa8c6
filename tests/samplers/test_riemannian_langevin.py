r"""Metropolis-adjusted Riemannian Langevin on S^n: stationarity and convergence against
scipy.stats.vonmises_fisher.

Tolerances: four standard errors of the mean of mu.x over independent chains, and a KS test
(p > 1e-3) against the exact law of mu.x; the unadjusted chain at the same step size is detected
by the same checks, so they can fail.
"""

import math

import numpy as np
import pytest
import torch
from pyro.distributions import constraints
from scipy import stats

from pyro_vsm.distributions import EnergyDistribution
from pyro_vsm.ops import bessel_iv_ratio
from pyro_vsm.samplers import (
    RiemannianLangevinSampler,
    RiemannianLangevinState,
    riemannian_langevin,
    riemannian_langevin_init,
    riemannian_langevin_step,
)

N = 4000


def vmf_problem(p, kappa, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=p)
    mu /= np.linalg.norm(mu)
    x0 = torch.tensor(stats.vonmises_fisher(mu, kappa).rvs(N, random_state=rng))
    mu_t = torch.tensor(mu)

    def energy(x):
        return -kappa * (x @ mu_t)

    mrl = bessel_iv_ratio(p / 2 - 1, torch.tensor(kappa, dtype=torch.float64)).item()
    return mu_t, x0, energy, mrl, rng


def z_score(w, mrl):
    return (w.mean() - mrl) / (w.std() / math.sqrt(len(w)))


def s2_cdf(kappa):
    return lambda t: np.expm1(kappa * (t + 1)) / np.expm1(2 * kappa)


@pytest.mark.parametrize("retraction", ["exp", "normalize"])
def test_vmf_on_s2_is_stationary(retraction):
    kappa = 4.0
    mu, x0, energy, mrl, _ = vmf_problem(3, kappa)
    gen = torch.Generator().manual_seed(1)
    x, acc = riemannian_langevin(energy, x0, 0.5, 20, retraction=retraction, generator=gen)
    assert 0.2 < acc.mean() < 0.95
    w = (x @ mu).numpy()
    assert abs(z_score(w, mrl)) < 4
    assert stats.kstest(w, s2_cdf(kappa)).pvalue > 1e-3
    # the same step without the correction leaves the target
    gen = torch.Generator().manual_seed(1)
    x, _ = riemannian_langevin(
        energy, x0, 0.5, 20, retraction=retraction, adjusted=False, generator=gen
    )
    w = (x @ mu).numpy()
    assert abs(z_score(w, mrl)) > 4 or stats.kstest(w, s2_cdf(kappa)).pvalue < 1e-3


@pytest.mark.parametrize("retraction", ["exp", "normalize"])
def test_vmf_on_s4_is_stationary(retraction):
    p, kappa = 5, 10.0
    mu, x0, energy, mrl, rng = vmf_problem(p, kappa, seed=1)
    gen = torch.Generator().manual_seed(2)
    x, acc = riemannian_langevin(energy, x0, 0.1, 20, retraction=retraction, generator=gen)
    assert 0.2 < acc.mean() < 0.99
    w = (x @ mu).numpy()
    assert abs(z_score(w, mrl)) < 4
    reference = stats.vonmises_fisher(mu.numpy(), kappa).rvs(N, random_state=rng) @ mu.numpy()
    assert stats.ks_2samp(w, reference).pvalue > 1e-3


def test_converges_from_uniform_to_a_mixture():
    r"""Chains from the uniform distribution reach an equal mixture of two vMFs on S^2 (the two
    modes at a right angle): mean direction and mode occupation."""
    torch.manual_seed(0)
    mus = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    kappa = 3.0

    def energy(x):
        return -torch.logsumexp(kappa * (x @ mus.T), dim=-1)

    x0 = torch.randn(N, 3, dtype=torch.float64)
    x, acc = riemannian_langevin(energy, x0, 0.4, 150, generator=torch.Generator().manual_seed(0))
    assert acc.mean() > 0.3
    # exact mean: 0.5 * A_3(kappa) * (mu_1 + mu_2)
    mrl = 1 / math.tanh(kappa) - 1 / kappa
    expected = 0.5 * mrl * mus.sum(0)
    se = x.std(0) / math.sqrt(N)
    assert ((x.mean(0) - expected).abs() < 4 * se).all()


def test_kernel_shapes_and_state():
    x0 = torch.randn(3, 7, 4, dtype=torch.float64)

    def energy(x):
        return (x * x).sum(-1) + x[..., 0]

    state = riemannian_langevin_init(x0, energy)
    assert isinstance(state, RiemannianLangevinState)
    assert state.position.shape == (3, 7, 4) and state.energy.shape == (3, 7)
    assert torch.allclose(state.position.norm(dim=-1), torch.ones(3, 7, dtype=torch.float64))
    assert torch.allclose((state.energy_grad * state.position).sum(-1), torch.zeros(3, 7).double())
    step = torch.full((3, 7), 0.1, dtype=torch.float64)
    new, info = riemannian_langevin_step(state, energy, step, generator=torch.Generator())
    assert new.position.shape == (3, 7, 4) and info.acceptance_rate.shape == (3, 7)
    assert info.is_accepted.dtype == torch.bool and info.proposal.shape == (3, 7, 4)
    moved = (new.position != state.position).any(-1)
    assert torch.equal(moved, info.is_accepted)
    assert not any(t.requires_grad for t in new)


def test_wrapping_proposals_are_rejected():
    r"""Uniform target on S^2: a proposal is accepted with probability one unless the tangent
    draw (|v| ~ sqrt(2 eta) chi_2) wraps around the sphere (|v| >= pi), which the exponential
    map cannot invert; the normalising retraction always accepts."""

    def flat(x):
        return torch.zeros(x.shape[:-1], dtype=x.dtype)

    eta, n = 20.0, 20_000
    state = riemannian_langevin_init(torch.randn(n, 3, dtype=torch.float64), flat)
    _, info = riemannian_langevin_step(state, flat, eta, generator=torch.Generator())
    assert ((info.acceptance_rate == 0) | (info.acceptance_rate > 1 - 1e-9)).all()
    expected = 1 - math.exp(-(math.pi**2) / (4 * eta))  # P(|v| < pi)
    rate = info.is_accepted.double().mean().item()
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    _, info = riemannian_langevin_step(
        state, flat, eta, retraction="normalize", generator=torch.Generator()
    )
    assert info.is_accepted.all()


class LinearEnergy(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)
        self.event_shape = weight.shape

    def forward(self, x):
        return x @ self.weight


def test_sampler_for_energy_distribution_on_the_sphere():
    mu = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    dist = EnergyDistribution(
        LinearEnergy(-5.0 * mu),
        support=constraints.sphere,
        sampler=RiemannianLangevinSampler(0.3, 100, generator=torch.Generator().manual_seed(0)),
    )
    x = dist.sample((N,))
    assert x.shape == (N, 3) and x.dtype == torch.float64  # the energy's dtype
    w = (x @ mu).numpy()
    assert abs(z_score(w, 1 / math.tanh(5.0) - 1 / 5.0)) < 4
    assert 0.3 < dist.sampler.acceptance_rate < 1


def test_errors():
    x0 = torch.randn(5, 3)
    with pytest.raises(ValueError, match="step_size"):
        riemannian_langevin(lambda x: x.sum(-1), x0, 0.0, 3)
    with pytest.raises(ValueError, match="step_size"):
        riemannian_langevin(lambda x: x.sum(-1), x0, True, 3)
    with pytest.raises(ValueError, match="num_steps"):
        riemannian_langevin(lambda x: x.sum(-1), x0, 0.1, 0)
    with pytest.raises(ValueError, match="retraction"):
        riemannian_langevin(lambda x: x.sum(-1), x0, 0.1, 3, retraction="chart")
    with pytest.raises(ValueError, match="expected one value per chain"):
        riemannian_langevin(lambda x: x.sum(), x0, 0.1, 3)
    with pytest.raises(ValueError, match="position"):
        riemannian_langevin(lambda x: x.sum(-1), torch.ones(5, 1), 0.1, 3)
    with pytest.raises(ValueError, match="step_size"):
        RiemannianLangevinSampler(-1.0, 3)
