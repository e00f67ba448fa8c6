r"""HypersphericalUniform and VonMisesFisher: normaliser against SciPy, normalisation by quadrature
and Monte Carlo, sampling, the reparametrised gradient, entropy and KL.

Monte Carlo checks use fixed seeds and a tolerance of four standard errors.
"""

import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.distributions import constraints
from scipy import special, stats

from pyro_vsm.distributions import EnergyDistribution, HypersphericalUniform, VonMisesFisher
from pyro_vsm.distributions.sphere import vmf_log_normalizer
from pyro_vsm.ops import log_sphere_area

DIMS = [2, 3, 5, 10, 50]


def unit(p, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p, generator=g, dtype=torch.float64)
    return x / x.norm()


def scipy_log_normalizer(p, kappa):
    nu = p / 2 - 1
    return nu * np.log(kappa) - p / 2 * np.log(2 * np.pi) - np.log(special.ive(nu, kappa)) - kappa


def scipy_ratio(p, kappa):
    return special.ive(p / 2, kappa) / special.ive(p / 2 - 1, kappa)


@pytest.mark.parametrize("p", DIMS)
def test_log_normalizer_and_its_gradient_against_scipy(p):
    kappa = np.logspace(-6, 4, 301)
    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    log_c = vmf_log_normalizer(p, k)
    (grad,) = torch.autograd.grad(log_c.sum(), k)
    ref = scipy_log_normalizer(p, kappa)
    assert np.allclose(log_c.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    assert np.allclose(-grad.numpy(), scipy_ratio(p, kappa), rtol=1e-10, atol=1e-15)
    d = VonMisesFisher(unit(p).expand(len(kappa), p), k.detach())
    assert np.allclose(d.mean_resultant_length.numpy(), scipy_ratio(p, kappa), rtol=1e-10)
    f32 = vmf_log_normalizer(p, k.detach().float())
    assert f32.dtype == torch.float32
    assert np.allclose(f32.double().numpy(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("p", [2, 3, 7])
def test_log_prob_against_scipy(p):
    mu, kappa = unit(p), 3.7
    x = torch.randn(50, p, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    ref = stats.vonmises_fisher(mu.numpy(), kappa).logpdf(x.numpy())
    assert np.allclose(VonMisesFisher(mu, kappa).log_prob(x).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("kappa", [1e-6, 0.7, 8.0, 300.0])
def test_log_prob_is_normalised_on_the_circle(kappa):
    theta = torch.arange(20_000, dtype=torch.float64) * (2 * math.pi / 20_000)
    x = torch.stack([theta.cos(), theta.sin()], -1)
    lp = VonMisesFisher(unit(2, seed=1), kappa).log_prob(x)
    # trapezoid rule on a periodic analytic integrand (exponentially accurate)
    assert (lp.exp().sum() * 2 * math.pi / 20_000).item() == pytest.approx(1.0, abs=1e-10)


def test_log_prob_is_normalised_on_the_sphere():
    # Gauss-Legendre in cos(polar angle) x trapezoid in the azimuth, about tilted directions
    t, w = np.polynomial.legendre.leggauss(160)
    phi = np.arange(160) * (2 * np.pi / 160)
    t, phi = np.meshgrid(t, phi, indexing="ij")
    r = np.sqrt(1 - t**2)
    x = torch.tensor(np.stack([r * np.cos(phi), r * np.sin(phi), t], -1))
    kappa = torch.tensor([1e-6, 0.7, 8.0, 50.0], dtype=torch.float64)
    lp = VonMisesFisher(unit(3, seed=2), kappa).log_prob(x[..., None, :])  # (160, 160, 4)
    integral = (lp.exp().numpy() * w[:, None, None]).sum((0, 1)) * 2 * np.pi / 160
    assert np.allclose(integral, 1.0, atol=1e-9)


@pytest.mark.parametrize("p,kappa", [(5, 3.0), (10, 5.0), (50, 10.0)])
def test_log_prob_is_normalised_monte_carlo(p, kappa):
    # integral = |S^{p-1}| E_uniform[density]
    torch.manual_seed(0)
    x = HypersphericalUniform(p - 1, dtype=torch.float64).sample((400_000,))
    values = VonMisesFisher(unit(p), kappa).log_prob(x).exp() * math.exp(log_sphere_area(p - 1))
    se = values.std() / math.sqrt(len(values))
    assert abs(values.mean() - 1) < 4 * se


@pytest.mark.parametrize("p", DIMS)
def test_samples_have_the_mean_resultant_length(p):
    torch.manual_seed(p)
    mu = unit(p, seed=p)
    kappa = torch.tensor([1e-6, 0.5, 4.0, 60.0, 1e4], dtype=torch.float64)
    d = VonMisesFisher(mu, kappa)  # batch shape (5,)
    z = d.sample((4000,))
    assert z.shape == (4000, 5, p)
    assert torch.allclose(z.norm(dim=-1), torch.ones(4000, 5, dtype=torch.float64), atol=1e-12)
    w = z @ mu
    se = w.std(0) / math.sqrt(4000)
    assert ((w.mean(0) - d.mean_resultant_length).abs() < 4 * se + 1e-12).all()
    # the component orthogonal to mu has mean zero
    perp = z - w[..., None] * mu
    se_perp = perp.std(0) / math.sqrt(4000)
    assert ((perp.mean(0)).abs() < 4.5 * se_perp + 1e-12).all()


def test_samples_match_the_exact_distribution_of_w_on_s2():
    torch.manual_seed(0)
    kappa = 2.5
    mu = unit(3, seed=5)
    w = (VonMisesFisher(mu, kappa).sample((20_000,)) @ mu).numpy()

    def cdf(t):  # on S^2, w = mu.x has density kappa e^{kappa t} / (2 sinh kappa)
        return np.expm1(kappa * (t + 1)) / np.expm1(2 * kappa)

    assert stats.kstest(w, cdf).pvalue > 1e-3


def test_batched_sampling_and_float32_stability():
    torch.manual_seed(0)
    loc = torch.nn.functional.normalize(torch.randn(4, 1, 6), dim=-1)
    kappa = torch.tensor([0.0, 1.0, 1e3, 1e5])
    d = VonMisesFisher(loc, kappa)  # batch shape (4, 4)
    assert d.batch_shape == (4, 4) and d.event_shape == (6,)
    z = d.rsample((3,))
    assert z.shape == (3, 4, 4, 6) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=-1), torch.ones(3, 4, 4), atol=1e-6)
    assert torch.isfinite(d.log_prob(z)).all() and torch.isfinite(d.entropy()).all()
    # very concentrated: samples hug loc
    w = (z * loc).sum(-1)[..., 3]
    assert (w > 1 - 1e-3).all()


def _exact_expectation(p, kappa, loc, a):
    r"""E[exp(a.z)] under vMF(loc, kappa) = C_p(kappa) / C_p(|kappa loc + a|), with SciPy."""
    return np.exp(
        scipy_log_normalizer(p, kappa) - scipy_log_normalizer(p, np.linalg.norm(kappa * loc + a))
    )


@pytest.mark.parametrize("p,kappa", [(2, 0.3), (3, 1.0), (5, 2.0), (10, 5.0)])
def test_reparametrised_gradient_matches_finite_differences(p, kappa):
    r"""d/dkappa and d/dloc of E[exp(a.z)]: Monte Carlo (pathwise term + the rejection sampler's
    score term from score_parts) against central finite differences of the exact expectation."""
    torch.manual_seed(p)
    mu = unit(p, seed=10 + p)
    a = 0.7 * torch.randn(p, dtype=torch.float64)
    mu_np, a_np = mu.numpy(), a.numpy()
    h = 1e-5
    fd_kappa = (
        _exact_expectation(p, kappa + h, mu_np, a_np)
        - _exact_expectation(p, kappa - h, mu_np, a_np)
    ) / (2 * h)
    tangent = unit(p, seed=99).numpy()
    tangent -= tangent @ mu_np * mu_np
    tangent /= np.linalg.norm(tangent)

    def along(t):  # a unit-speed curve on the sphere through mu in the direction `tangent`
        return np.cos(t) * mu_np + np.sin(t) * tangent

    fd_loc = (
        _exact_expectation(p, kappa, along(h), a_np) - _exact_expectation(p, kappa, along(-h), a_np)
    ) / (2 * h)

    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    loc = mu.clone().requires_grad_(True)
    chunks, size = 20, 5000
    full, pathwise, loc_grads = [], [], []
    for _ in range(chunks):
        d = VonMisesFisher(loc, k)
        z = d.rsample((size,))
        f = torch.exp(z @ a)
        score = d.score_parts(z).score_function
        assert score.shape == (size,)
        g_rep_k, g_rep_loc = torch.autograd.grad(f.mean(), (k, loc), retain_graph=True)
        (g_cor,) = torch.autograd.grad((f.detach() * score).mean(), k)
        full.append(g_rep_k + g_cor)
        pathwise.append(g_rep_k)
        loc_grads.append(g_rep_loc @ torch.as_tensor(tangent))
    full, pathwise, loc_grads = map(torch.stack, (full, pathwise, loc_grads))
    se = full.std() / math.sqrt(chunks)
    assert abs(full.mean().item() - fd_kappa) < 4 * se
    assert abs(pathwise.mean().item() - fd_kappa) > 4 * se  # the score term is needed
    se_loc = loc_grads.std() / math.sqrt(chunks)
    assert abs(loc_grads.mean().item() - fd_loc) < 4 * se_loc


def test_trace_elbo_uses_the_score_term():
    r"""With a uniform prior and no data, Trace_ELBO's gradient in kappa estimates
    -d KL(vMF || uniform)/d kappa: Pyro adds the score term from score_parts."""
    p, kappa0, particles = 4, 1.5, 10_000
    mu = unit(p, seed=3)

    def model():
        pyro.sample("z", HypersphericalUniform(p - 1, dtype=torch.float64))

    def guide():
        k = pyro.param("k", torch.tensor(kappa0, dtype=torch.float64), constraints.positive)
        pyro.sample("z", VonMisesFisher(mu, k))

    elbo = pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=True)
    grads = []
    for seed in range(10):
        pyro.set_rng_seed(seed)
        pyro.clear_param_store()
        loss = elbo.differentiable_loss(model, guide)
        k = pyro.param("k").unconstrained()
        (g,) = torch.autograd.grad(loss, k)
        grads.append(g / kappa0)  # d/d log kappa -> d/d kappa
    grads = torch.stack(grads)
    k = torch.tensor(kappa0, dtype=torch.float64, requires_grad=True)
    kl = torch.distributions.kl_divergence(
        VonMisesFisher(mu, k), HypersphericalUniform(p - 1, dtype=torch.float64)
    )
    (exact,) = torch.autograd.grad(kl, k)
    se = grads.std() / math.sqrt(len(grads))
    assert abs(grads.mean() - exact) < 4 * se


@pytest.mark.parametrize("kappa", [1e-6, 0.8, 6.0, 200.0])
def test_kl_to_uniform_and_entropy_by_quadrature(kappa):
    # on S^2: KL = int q log(q |S^2|), with w = mu.x of density kappa e^{kappa w} / (2 sinh kappa)
    p = 3
    d = VonMisesFisher(unit(p), kappa)
    u = HypersphericalUniform(2, dtype=torch.float64)
    t, w = np.polynomial.legendre.leggauss(200)
    # density of w: 2 pi C_3(kappa) e^{kappa t}
    log_c = scipy_log_normalizer(p, kappa)
    log_q = log_c + kappa * t
    kl_quad = np.sum(w * 2 * np.pi * np.exp(log_q) * (log_q + np.log(4 * np.pi)))
    kl = torch.distributions.kl_divergence(d, u)
    assert kl.item() == pytest.approx(kl_quad, rel=1e-9, abs=1e-12)
    assert d.entropy().item() == pytest.approx(math.log(4 * math.pi) - kl_quad, rel=1e-9)


@pytest.mark.parametrize("p,kappa", [(10, 4.0), (50, 30.0)])
def test_kl_and_entropy_monte_carlo(p, kappa):
    torch.manual_seed(0)
    d = VonMisesFisher(unit(p), kappa)
    lp = d.log_prob(d.sample((100_000,)))
    se = lp.std() / math.sqrt(len(lp))
    assert abs(-lp.mean() - d.entropy()) < 4 * se
    kl = torch.distributions.kl_divergence(d, HypersphericalUniform(p - 1, dtype=torch.float64))
    assert abs(lp.mean() + log_sphere_area(p - 1) - kl) < 4 * se
    # the KL is finite and vanishes at kappa = 0
    zero = VonMisesFisher(unit(p), 0.0)
    kl0 = torch.distributions.kl_divergence(zero, HypersphericalUniform(p - 1, dtype=torch.float64))
    assert abs(kl0.item()) < 1e-12


def test_mean():
    d = VonMisesFisher(unit(5), torch.tensor([0.5, 7.0], dtype=torch.float64))
    assert d.mean.shape == (2, 5)
    expected = torch.as_tensor(scipy_ratio(5, np.array([0.5, 7.0])))[:, None] * unit(5)
    assert torch.allclose(d.mean, expected, rtol=1e-10)


def test_hyperspherical_uniform():
    u = HypersphericalUniform(2)
    assert u.event_shape == (3,) and u.batch_shape == () and u.dim == 2
    torch.manual_seed(0)
    x = u.sample((20_000,))
    assert torch.allclose(x.norm(dim=-1), torch.ones(20_000), atol=1e-6)
    assert (x.mean(0).abs() < 4 / math.sqrt(3 * 20_000)).all()
    assert torch.allclose(torch.cov(x.T), torch.eye(3) / 3, atol=0.015)
    assert torch.allclose(u.log_prob(x), torch.full((20_000,), -math.log(4 * math.pi)))
    assert u.entropy().item() == pytest.approx(math.log(4 * math.pi))
    assert torch.equal(u.mean, torch.zeros(3))
    big = u.expand((5, 2))
    assert big.sample().shape == (5, 2, 3) and big.log_prob(x[:1]).shape == (5, 2)
    assert HypersphericalUniform(1, dtype=torch.float64).sample().dtype == torch.float64
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="dim must be a positive integer"):
            HypersphericalUniform(bad)
    with pytest.raises(ValueError):
        HypersphericalUniform(2, validate_args=True).log_prob(torch.ones(3))


def test_pyro_sample_sites_in_a_plate():
    def model():
        with pyro.plate("data", 7):
            z = pyro.sample("z", HypersphericalUniform(3))
            pyro.sample("y", VonMisesFisher(z, 2.0), obs=z)

    def guide():
        loc = torch.nn.functional.normalize(torch.randn(7, 4), dim=-1)
        with pyro.plate("data", 7):
            pyro.sample("z", VonMisesFisher(loc, torch.full((7,), 3.0)))

    tr = pyro.poutine.trace(model).get_trace()
    tr.compute_log_prob()
    assert tr.nodes["z"]["value"].shape == (7, 4) and tr.nodes["y"]["log_prob"].shape == (7,)
    loss = pyro.infer.Trace_ELBO().loss(model, guide)
    assert math.isfinite(loss)


def test_vmf_argument_errors():
    with pytest.raises(ValueError, match="loc must"):
        VonMisesFisher(torch.ones(1), 1.0)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(unit(3), True)
    with pytest.raises(ValueError, match="broadcast"):
        VonMisesFisher(unit(3).expand(2, 3), torch.ones(3))
    with pytest.raises(ValueError):
        VonMisesFisher(2 * unit(3), 1.0, validate_args=True)
    with pytest.raises(ValueError):
        VonMisesFisher(unit(3), -1.0, validate_args=True)
    with pytest.raises(ValueError):
        VonMisesFisher(unit(3), 1.0, validate_args=True).log_prob(torch.ones(3))
    with pytest.raises(ValueError, match="event shapes differ"):
        torch.distributions.kl_divergence(VonMisesFisher(unit(3), 1.0), HypersphericalUniform(3))


def test_meta_device_log_prob_and_entropy():
    loc = torch.empty(4, 3, device="meta")
    kappa = torch.empty(4, device="meta")
    d = VonMisesFisher(loc, kappa, validate_args=False)  # validation reads values
    assert d.log_prob(torch.empty(4, 3, device="meta")).device.type == "meta"
    assert d.entropy().device.type == "meta" and d.mean.device.type == "meta"
    kl = torch.distributions.kl_divergence(d, HypersphericalUniform(2, device="meta"))
    assert kl.device.type == "meta"


def test_energy_distribution_support_option():
    energy = lambda z: -(z[..., 0])  # noqa: E731
    default = EnergyDistribution(energy, event_shape=(3,))
    assert default.support.event_dim == 1 and default.support.check(torch.ones(3) * 5)
    d = EnergyDistribution(energy, event_shape=(3,), support=constraints.sphere)
    assert d.support is constraints.sphere
    assert d.expand((4,)).support is constraints.sphere
    x = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    assert d.support.check(x).all() and not d.support.check(2 * x).any()
    d_checked = EnergyDistribution(
        energy, event_shape=(3,), support=constraints.sphere, validate_args=True
    )
    d_checked.log_prob(x)
    with pytest.raises(ValueError):
        d_checked.log_prob(2 * x)
    with pytest.raises(ValueError, match="support must be a constraint"):
        EnergyDistribution(energy, event_shape=(3,), support="sphere")
    with pytest.raises(ValueError, match="event dims"):
        EnergyDistribution(energy, event_shape=(), support=constraints.sphere)
    matrix = EnergyDistribution(
        lambda z: z.sum((-1, -2)), event_shape=(2, 3), support=constraints.sphere
    )
    assert matrix.support.event_dim == 2
    assert isinstance(pdist.Normal(0, 1).support, constraints.Constraint)
