"""The Gaussian augmentation of sphere latents (pyro_vsm.evaluation.sphere_augmented): exact
lifts, AIS and importance sampling against a model with a closed-form marginal likelihood."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_vsm.distributions import HypersphericalUniform, VonMisesFisher
from pyro_vsm.distributions.sphere import vmf_log_normalizer
from pyro_vsm.evaluation import ais_log_likelihood, importance_log_likelihood, sphere_augmented
from pyro_vsm.evaluation.sphere import AmbientLift
from pyro_vsm.ops import log_sphere_area

D64 = torch.float64
N_SPHERE, SIGMA = 2, 0.5  # z on S², x | z ~ N(z, σ² I₃)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", HypersphericalUniform(N_SPHERE, dtype=x.dtype))
        pyro.sample("x", dist.Normal(z, SIGMA).to_event(1), obs=x)


def posterior(x, shrink=1.0):
    """The exact posterior q(z|x) = vMF(x/|x|, |x|/σ²) (``shrink`` scales its concentration)."""
    kappa = shrink * x.norm(dim=-1) / SIGMA**2
    return VonMisesFisher(x / x.norm(dim=-1, keepdim=True), kappa)


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", posterior(x))


def broad_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", posterior(x, shrink=0.5))


def exact_log_marginal(x):
    """log p(x) = log N(x; 0, σ²)-type constant + log E_Unif[exp(xᵀz/σ²)], the expectation
    being 1/(C_p(κ)|S^{p-1}|) with κ = |x|/σ²."""
    p = N_SPHERE + 1
    kappa = x.norm(dim=-1) / SIGMA**2
    log_mgf = -vmf_log_normalizer(p, kappa) - log_sphere_area(N_SPHERE)
    quad = (x.pow(2).sum(-1) + 1) / (2 * SIGMA**2)
    return -0.5 * p * math.log(2 * math.pi * SIGMA**2) - quad + log_mgf


def _data(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, N_SPHERE + 1, generator=g, dtype=D64)
    return z / z.norm(dim=-1, keepdim=True) + 0.4 * torch.randn(z.shape, generator=g, dtype=D64)


def test_lift_of_the_uniform_distribution_is_the_standard_gaussian():
    for n in (1, 2, 7):
        w = torch.randn(50, n + 1, dtype=D64) * 2
        lifted = AmbientLift(HypersphericalUniform(n, dtype=D64)).log_prob(w)
        gauss = dist.Normal(torch.zeros(n + 1, dtype=D64), 1.0).to_event(1).log_prob(w)
        assert torch.allclose(lifted, gauss, rtol=0, atol=1e-12)


def test_lift_of_a_vmf_is_normalised_and_projects_back():
    torch.manual_seed(0)
    base = VonMisesFisher(torch.tensor([0.6, 0.0, 0.8], dtype=D64), 4.0)
    lift = AmbientLift(base)
    w = torch.randn(200000, 3, dtype=D64)
    gauss = dist.Normal(torch.zeros(3, dtype=D64), 1.0).to_event(1).log_prob(w)
    ratio = (lift.log_prob(w) - gauss).exp()  # E_N[lift / N] = ∫ lift = 1
    assert abs(float(ratio.mean()) - 1) < 4 * float(ratio.std()) / math.sqrt(len(ratio))
    z = lift.sample((100000,))
    z = z / z.norm(dim=-1, keepdim=True)
    assert torch.allclose(z.mean(0), base.mean, atol=0.01)


def test_augmented_model_has_an_ambient_latent_and_leaves_other_sites_alone():
    x = _data()
    tr = poutine.trace(sphere_augmented(model)).get_trace(x)
    assert not tr.nodes["z_ambient"]["is_observed"] and tr.nodes["z"]["is_observed"]
    z, w = tr.nodes["z"]["value"], tr.nodes["z_ambient"]["value"]
    assert torch.allclose(z, w / w.norm(dim=-1, keepdim=True))
    tr.compute_log_prob()
    assert torch.equal(tr.nodes["z"]["log_prob"], torch.zeros_like(tr.nodes["z"]["log_prob"]))

    def euclidean(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(3, dtype=D64), 1.0).to_event(1))

    assert set(poutine.trace(sphere_augmented(euclidean)).get_trace(x).nodes) == set(
        poutine.trace(euclidean).get_trace(x).nodes
    )
    with pytest.raises(ValueError, match="model or guide"):
        sphere_augmented(3)
    with pytest.raises(ValueError, match="on the sphere"):
        AmbientLift(dist.Normal(torch.zeros(3), 1.0).to_event(1))


def test_importance_sampling_with_vmf_guides():
    """The exact posterior as proposal gives log p(x) with zero variance; a broader vMF guide
    gives an estimate within its standard errors."""
    x = _data()
    exact = exact_log_marginal(x)
    assert torch.allclose(importance_log_likelihood(model, guide, x, num_samples=4), exact)
    pyro.set_rng_seed(0)
    est, diag = importance_log_likelihood(
        model, broad_guide, x, num_samples=2000, return_diagnostics=True
    )
    assert ((est - exact).abs() < 4 * diag.stderr + 1e-3).all(), (est - exact, diag.stderr)


def test_ais_through_the_augmentation_is_exact():
    """From the guide (the exact posterior): every AIS weight is p(x); from the prior: the
    estimate agrees with the closed form within its standard error."""
    x = _data()
    exact = exact_log_marginal(x)
    est = ais_log_likelihood(model, x, guide=guide, num_temperatures=5, num_chains=2)
    assert torch.allclose(est, exact, rtol=0, atol=1e-10)
    pyro.set_rng_seed(1)
    est, diag = ais_log_likelihood(
        model, x, num_temperatures=100, num_chains=32, return_diagnostics=True
    )
    assert ((est - exact).abs() < 4 * diag.stderr + 0.02).all(), (est - exact, diag.stderr)
