import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm.distributions import (
    EnergyDistribution,
    GRBMEnergy,
    MLPEnergy,
    QuadraticFormEnergy,
    TiltedGaussianEnergy,
)
from pyro_vsm.evaluation import log_partition
from pyro_vsm.samplers import GibbsLangevinSampler, LangevinSampler

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make_grbm(d, h, seed=0, weight_scale=0.8, device="cpu", dtype=torch.float64):
    """A GRBM with non-trivial μ, σ, W, b (fixed by ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    grbm = GRBMEnergy(d, h, dtype=dtype)
    with torch.no_grad():
        grbm.mu.copy_(0.5 * torch.randn(d, generator=g, dtype=dtype))
        grbm.log_sigma.copy_((0.6 + 0.5 * torch.rand(d, generator=g, dtype=dtype)).log())
        grbm.W.copy_(weight_scale * torch.randn(d, h, generator=g, dtype=dtype) / math.sqrt(h))
        grbm.b.copy_(0.5 * torch.randn(h, generator=g, dtype=dtype))
    return grbm.to(device)


def mixture_moments(grbm):
    log_w, means, scale = grbm.mixture_components()
    w = log_w.exp()
    mean = (w[:, None] * means).sum(0)
    second = (w[:, None, None] * means[:, :, None] * means[:, None, :]).sum(0)
    return mean, torch.diag(scale**2) + second - mean[:, None] * mean[None, :]


# ---------------------------------------------------------------- GRBM energy


def test_grbm_marginal_energy_sums_the_joint_over_hidden_states():
    grbm = make_grbm(3, 4)
    z = torch.randn(7, 3, dtype=torch.float64)
    h = grbm.hidden_states()  # (16, 4)
    joint = grbm.joint_energy(z[:, None, :], h)  # (7, 16)
    torch.testing.assert_close(grbm(z), -torch.logsumexp(-joint, -1), rtol=0, atol=1e-12)
    # eq. 12 written out
    var = grbm.sigma**2
    eq12 = 0.5 * (((z - grbm.mu) / grbm.sigma) ** 2).sum(-1) - torch.nn.functional.softplus(
        (z / var) @ grbm.W + grbm.b
    ).sum(-1)
    torch.testing.assert_close(grbm(z), eq12, rtol=0, atol=1e-12)


def test_grbm_conditionals():
    grbm = make_grbm(3, 4, seed=1)
    z = torch.randn(5, 3, dtype=torch.float64)
    h = grbm.hidden_states()
    # p(h|z) = exp(-E(z,h) + E(z)) is the product of Bernoulli(sigmoid(hidden_logits))
    log_p_h = -grbm.joint_energy(z[:, None, :], h) + grbm(z)[:, None]
    bern = dist.Bernoulli(logits=grbm.hidden_logits(z)[:, None, :]).log_prob(h).sum(-1)
    torch.testing.assert_close(log_p_h, bern, rtol=0, atol=1e-12)
    # p(z|h) = N(mu + W h, sigma^2): -E(z, h) - log N(z; ...) does not depend on z
    hk = h[5]
    zs = torch.randn(6, 3, dtype=torch.float64)
    normal = dist.Normal(grbm.visible_mean(hk), grbm.sigma).log_prob(zs).sum(-1)
    diff = -grbm.joint_energy(zs, hk.expand(6, 4)) - normal
    torch.testing.assert_close(diff, diff[:1].expand(6), rtol=0, atol=1e-12)
    samples = grbm.sample_hidden(z.expand(2000, 5, 3), torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(
        samples.mean(0), torch.sigmoid(grbm.hidden_logits(z)), atol=0.05, rtol=0
    )


@pytest.mark.parametrize("d,h", [(1, 3), (2, 2)])
def test_grbm_log_partition_matches_quadrature(d, h):
    grbm = make_grbm(d, h, seed=d + h, weight_scale=1.5)
    x = torch.linspace(-14.0, 14.0, 2801 if d == 1 else 1001, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(*([x] * d), indexing="ij"), -1).reshape(-1, d)
    with torch.no_grad():
        quad = torch.logsumexp(-grbm(grid), 0) + d * math.log(float(x[1] - x[0]))
        exact = grbm.log_partition()
    assert abs(float(exact - quad)) < 1e-8
    # the normalised density is the mixture of 2^H Gaussians
    log_w, means, scale = grbm.mixture_components()
    torch.testing.assert_close(log_w.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    z = torch.randn(9, d, dtype=torch.float64)
    mix = torch.logsumexp(log_w + dist.Normal(means, scale).log_prob(z[:, None]).sum(-1), -1)
    torch.testing.assert_close(-grbm(z) - exact, mix, rtol=0, atol=1e-10)


@pytest.mark.parametrize("d,h", [(2, 1), (3, 5), (4, 10)])
def test_grbm_log_partition_matches_ais(d, h):
    # AIS errors measured with these seeds: +0.0015, +0.0026, -0.0094 nats (stderr 0.008-0.011)
    grbm = make_grbm(d, h, seed=h).requires_grad_(False)  # AIS only needs dE/dz
    exact = grbm.log_partition()
    mean, cov = mixture_moments(grbm)
    pyro.set_rng_seed(h)
    est, diag = log_partition(
        grbm,
        method="ais",
        num_temperatures=1000,
        num_chains=64,
        base_loc=mean,
        base_scale=1.5 * cov.diagonal().sqrt(),
        return_diagnostics=True,
    )
    assert abs(float(est - exact)) < 0.05, (float(est), float(exact), float(diag.stderr))
    # the exact value is what "auto" returns
    assert log_partition(grbm) is exact or torch.equal(log_partition(grbm), exact)


def test_grbm_log_partition_gradient_chunks_and_limit():
    grbm = make_grbm(2, 5, seed=3)
    log_z = grbm.log_partition()
    # d log Z / d b = E_p[h]
    (grad_b,) = torch.autograd.grad(log_z, grbm.b)
    log_w, _, _ = grbm.mixture_components()
    expected = (log_w.exp()[:, None] * grbm.hidden_states()).sum(0)
    torch.testing.assert_close(grad_b, expected.detach(), rtol=0, atol=1e-12)
    grbm.chunk_size = 4  # 2^5 states in 8 chunks
    torch.testing.assert_close(grbm.log_partition(), log_z, rtol=0, atol=1e-12)
    grbm.max_exact_hidden = 4
    with pytest.raises(NotImplementedError, match="max_exact_hidden"):
        grbm.log_partition()
    with pytest.raises(NotImplementedError):
        log_partition(grbm, method="exact")
    # "auto" falls back to AIS
    approx = log_partition(grbm.requires_grad_(False), num_temperatures=100, num_chains=32)
    assert abs(float(approx - log_z.detach())) < 0.2


# ---------------------------------------------------------------- neural energies


NEURAL = [
    lambda d: MLPEnergy(d, hidden=(16, 16)),
    lambda d: QuadraticFormEnergy(d, hidden=(16,)),
    lambda d: TiltedGaussianEnergy(d, hidden=(16,)),
]


@pytest.mark.parametrize("make", NEURAL + [lambda d: GRBMEnergy(d, 4)])
def test_energy_shapes_and_event_shape(make):
    energy = make(3)
    assert energy.event_shape == torch.Size([3])
    for lead in [(), (5,), (2, 4)]:
        assert energy(torch.randn(lead + (3,))).shape == lead
    with pytest.raises(ValueError, match="z must have shape"):
        energy(torch.randn(5, 4))
    with pytest.raises(ValueError, match="z must have shape"):
        energy(torch.tensor(1.0))


def test_neural_energy_forms():
    torch.manual_seed(0)
    z = torch.randn(6, 2)
    mlp = MLPEnergy(2, hidden=(8,), confinement=0.3)
    torch.testing.assert_close(mlp(z) - mlp.net(z).squeeze(-1), 0.15 * z.pow(2).sum(-1))
    # confinement dominates far away: normalisable
    far = 1e3 * torch.nn.functional.normalize(torch.randn(100, 2), dim=-1)
    assert bool((mlp(far) > 1e4).all())
    quad = QuadraticFormEnergy(2, hidden=(8,), confinement=0.0)
    torch.testing.assert_close(quad(z), (z * quad.psi(z)).sum(-1))
    assert float(quad(torch.zeros(2)).detach().abs()) == 0.0
    assert bool((QuadraticFormEnergy(2, hidden=(8,))(far) > 1e3).all())
    tilted = TiltedGaussianEnergy(2, hidden=(8,), base_scale=2.0)
    # starts as exactly N(0, s^2 I)
    torch.testing.assert_close(tilted(z), z.pow(2).sum(-1) / 8.0)
    with torch.no_grad():
        tilted.net[-1].weight.normal_()
    torch.testing.assert_close(tilted(z), z.pow(2).sum(-1) / 8.0 - tilted.tilt(z))


def test_quadratic_form_spectral_norm():
    torch.manual_seed(0)
    quad = QuadraticFormEnergy(2, hidden=(8, 8), spectral_norm=True)
    linears = [m for m in quad.psi if isinstance(m, torch.nn.Linear)]
    sn = [torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in linears]
    assert sn == [True, True, False]  # the hidden layers, not the output layer
    quad.eval()
    assert torch.linalg.matrix_norm(linears[1].weight, 2) < 1 + 1e-3
    with pytest.raises(ValueError, match="spectral_norm"):
        QuadraticFormEnergy(2, spectral_norm=1)


def test_energy_argument_errors():
    with pytest.raises(ValueError, match="num_visible"):
        GRBMEnergy(0, 3)
    with pytest.raises(ValueError, match="num_hidden"):
        GRBMEnergy(2, 1.5)
    with pytest.raises(ValueError, match="sigma"):
        GRBMEnergy(2, 3, sigma=0.0)
    with pytest.raises(ValueError, match="hidden"):
        MLPEnergy(2, hidden=(8, 0))
    with pytest.raises(ValueError, match="confinement"):
        QuadraticFormEnergy(2, confinement=-1.0)
    with pytest.raises(ValueError, match="dim"):
        TiltedGaussianEnergy(0)
    with pytest.raises(ValueError, match="base_scale"):
        TiltedGaussianEnergy(2, base_scale=-1.0)
    with pytest.raises(ValueError, match="activation"):
        MLPEnergy(2, activation="relu")
    grbm = GRBMEnergy(2, 3)
    with pytest.raises(ValueError, match="h must have shape"):
        grbm.visible_mean(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="floating-point"):
        grbm(torch.zeros(4, 2, dtype=torch.long))


@pytest.mark.parametrize("device", DEVICES + ["meta"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_energies_follow_device_and_dtype(device, dtype):
    # on "meta" any tensor created without device= would mix a CPU tensor in and raise
    z = torch.randn(4, 3, dtype=dtype).to(device)
    for energy in [make(3) for make in NEURAL] + [GRBMEnergy(3, 4)]:
        energy = energy.to(device=device, dtype=dtype)
        e = energy(z)
        assert e.shape == (4,) and e.dtype == dtype and e.device == z.device
    grbm = GRBMEnergy(3, 4).to(device=device, dtype=dtype)
    log_z = grbm.log_partition()
    assert log_z.device == z.device and log_z.dtype == dtype
    h = grbm.sample_hidden(z)
    assert h.shape == (4, 4) and grbm.sample_visible(h).device == z.device
    d = EnergyDistribution(grbm, validate_args=False).expand([4])  # meta: no value checks
    assert d.log_prob(z).device == z.device


# ---------------------------------------------------------------- EnergyDistribution


def test_energy_distribution_log_prob_flags_and_base():
    grbm = make_grbm(2, 3)
    d = EnergyDistribution(grbm)
    assert EnergyDistribution.is_normalized is False and d.is_normalized is False
    assert not d.has_rsample
    assert d.batch_shape == () and d.event_shape == (2,)
    assert d.support.event_dim == 1 and bool(d.support.check(torch.zeros(3, 2)).all())
    z = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(d.log_prob(z), -grbm(z))
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 2.0).to_event(1)
    tilted = EnergyDistribution(grbm, base=base)
    torch.testing.assert_close(tilted.log_prob(z), -grbm(z) + base.log_prob(z))
    torch.testing.assert_close(tilted.potential(z), grbm(z) - base.log_prob(z))
    # a plain callable needs event_shape
    quad = EnergyDistribution(lambda z: 0.5 * z.pow(2).sum((-2, -1)), event_shape=(2, 3))
    assert quad.event_shape == (2, 3) and quad.support.event_dim == 2
    torch.testing.assert_close(quad.log_prob(torch.ones(4, 2, 3)), torch.full((4,), -3.0))


def test_energy_distribution_expand_and_plates():
    grbm = make_grbm(2, 3)
    d = EnergyDistribution(grbm)
    e = d.expand([5])
    assert isinstance(e, EnergyDistribution) and e.batch_shape == (5,) and e.energy is grbm
    z = torch.randn(5, 2, dtype=torch.float64)
    assert e.log_prob(z).shape == (5,)
    torch.testing.assert_close(e.log_prob(z[0]), (-grbm(z[0])).expand(5))
    assert e.log_prob(torch.randn(3, 1, 2, dtype=torch.float64)).shape == (3, 5)
    assert e.expand([4, 5]).batch_shape == (4, 5)
    with pytest.raises(ValueError, match="cannot expand"):
        e.expand([3])
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    eb = EnergyDistribution(grbm, base=base).expand([5])
    assert eb.base.batch_shape == (5,)
    torch.testing.assert_close(eb.log_prob(z), -grbm(z) + base.log_prob(z))

    def model():
        with pyro.plate("outer", 3, dim=-2), pyro.plate("data", 5):
            return pyro.sample("z", EnergyDistribution(grbm))

    values = torch.randn(3, 5, 2, dtype=torch.float64)
    tr = poutine.trace(poutine.condition(model, data={"z": values})).get_trace()
    tr.compute_log_prob()
    site = tr.nodes["z"]
    assert site["fn"].batch_shape == (3, 5) and site["fn"].event_shape == (2,)
    torch.testing.assert_close(site["log_prob"], -grbm(values))


def test_energy_distribution_sampling():
    grbm = make_grbm(2, 3)
    d = EnergyDistribution(grbm)
    with pytest.raises(NotImplementedError, match="sampler="):
        d.sample()
    with pytest.raises(NotImplementedError, match="sampler="):
        pyro.sample("z", d)
    gen = torch.Generator().manual_seed(0)
    ds = EnergyDistribution(grbm, sampler=LangevinSampler(0.05, 5, generator=gen)).expand([3])
    s = ds.sample((4,))
    assert s.shape == (4, 3, 2) and s.dtype == torch.float64 and not s.requires_grad
    mala = LangevinSampler(0.05, 5, adjusted=True, generator=gen)
    assert EnergyDistribution(grbm, sampler=mala).sample((7,)).shape == (7, 2)
    assert 0 < float(mala.acceptance_rate) <= 1
    gl = EnergyDistribution(grbm, sampler=GibbsLangevinSampler(3, generator=gen))
    assert gl.sample((6,)).shape == (6, 2)
    bg = EnergyDistribution(grbm, sampler=GibbsLangevinSampler(3, langevin_steps=None))
    assert bg.sample().shape == (2,)
    bad = EnergyDistribution(grbm, sampler=lambda dist, shape: torch.zeros(3))
    with pytest.raises(ValueError, match="sampler returned"):
        bad.sample()


def test_energy_distribution_log_partition():
    grbm = make_grbm(1, 3, weight_scale=1.5)
    d = EnergyDistribution(grbm)
    log_z = grbm.log_partition()
    torch.testing.assert_close(d.log_partition(), log_z)
    torch.testing.assert_close(log_partition(d.energy), log_z)
    # the normalised density integrates to one
    x = torch.linspace(-12.0, 12.0, 4001, dtype=torch.float64)[:, None]
    mass = d.normalized_log_prob(x).exp().sum() * (x[1, 0] - x[0, 0])
    assert abs(float(mass.detach()) - 1.0) < 1e-8
    torch.testing.assert_close(d.normalized_log_prob(x, log_partition=2.0), d.log_prob(x) - 2.0)
    with pytest.raises(NotImplementedError, match="no exact"):
        EnergyDistribution(MLPEnergy(1)).log_partition()
    base = dist.Normal(torch.zeros(1, dtype=torch.float64), 1.0).to_event(1)
    with pytest.raises(NotImplementedError, match="base"):
        EnergyDistribution(grbm, base=base).log_partition()


def test_energy_distribution_errors():
    with pytest.raises(ValueError, match="event_shape"):
        EnergyDistribution(lambda z: z.pow(2).sum(-1))
    with pytest.raises(ValueError, match="energy must be callable"):
        EnergyDistribution(3.0)
    grbm = GRBMEnergy(2, 3)
    with pytest.raises(ValueError, match="base must have event_shape"):
        EnergyDistribution(grbm, base=dist.Normal(torch.zeros(2), 1.0))
    with pytest.raises(ValueError, match="sampler"):
        EnergyDistribution(grbm, sampler="langevin")
    d = EnergyDistribution(grbm)
    with pytest.raises(ValueError, match="value must have shape"):
        d.log_prob(torch.zeros(4, 3))
    wrong = EnergyDistribution(lambda z: z.pow(2), event_shape=(2,))
    with pytest.raises(ValueError, match="energy returned"):
        wrong.log_prob(torch.zeros(4, 2))


def _vae(grbm, x, n):
    def model(x):
        pyro.module("prior", grbm)
        with pyro.plate("data", n):
            z = pyro.sample("z", EnergyDistribution(grbm))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(n, 2, dtype=x.dtype))
        scale = pyro.param("scale", torch.ones(n, 2, dtype=x.dtype), dist.constraints.positive)
        with pyro.plate("data", n):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide


def test_energy_distribution_as_latent_site_under_trace_elbo():
    grbm = make_grbm(2, 3)
    n = 6
    x = torch.randn(n, 2, dtype=torch.float64)
    model, guide = _vae(grbm, x, n)
    # the model's site log-density is -E(z) at the guide's z (sample() is never called)
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    model_tr.compute_log_prob()
    z = guide_tr.nodes["z"]["value"]
    torch.testing.assert_close(model_tr.nodes["z"]["log_prob"], -grbm(z))
    before = {k: v.detach().clone() for k, v in grbm.named_parameters()}
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=Trace_ELBO())
    losses = [svi.step(x) for _ in range(20)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    # the prior's parameters are registered and moved by the optimiser
    assert any(not torch.equal(before[k], v) for k, v in grbm.named_parameters())
    # vectorised particles expand the site to (particles, data)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(model, guide, x))


def test_energy_distribution_with_an_autoguide_initialised_by_value():
    from pyro.infer.autoguide import AutoNormal, init_to_value

    grbm = make_grbm(2, 3)
    x = torch.randn(6, 2, dtype=torch.float64)
    model, _ = _vae(grbm, x, 6)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"z": torch.zeros_like(x)}))
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=Trace_ELBO())
    assert all(math.isfinite(svi.step(x)) for _ in range(3))


def test_loss_of_the_analogous_bound_is_elbo_plus_log_z():
    # Trace_ELBO with the unnormalized prior computes -(ELBO + log Z)
    grbm = make_grbm(2, 2)
    n = 4
    x = torch.randn(n, 2, dtype=torch.float64)
    model, guide = _vae(grbm, x, n)
    log_z = float(grbm.log_partition().detach())

    def normalised_model(x):
        with pyro.plate("data", n):
            z = pyro.sample("z", EnergyDistribution(grbm))
            pyro.factor("log_z", torch.full((n,), -log_z, dtype=x.dtype))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    pyro.set_rng_seed(0)
    unnormalized = Trace_ELBO().loss(model, guide, x)
    pyro.set_rng_seed(0)
    normalized = Trace_ELBO().loss(normalised_model, guide, x)
    assert abs(unnormalized - (normalized - n * log_z)) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_meta_device_elbo_with_an_energy_prior(dtype):
    grbm = GRBMEnergy(2, 3).to(device="meta", dtype=dtype)
    x = torch.empty(5, 2, device="meta", dtype=dtype)

    def model(x):
        with pyro.plate("data", 5):
            z = pyro.sample("z", EnergyDistribution(grbm))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", 5):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))

    # Trace_ELBO calls .item(), which meta tensors refuse: build its surrogate by hand
    with pyro.validation_enabled(False):
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
        loss = guide_tr.log_prob_sum() - model_tr.log_prob_sum()
    loss.backward()
    assert loss.device.type == "meta" and grbm.W.grad is not None


def test_hidden_states_enumeration():
    grbm = GRBMEnergy(2, 3)
    states = grbm.hidden_states()
    expected = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    assert {tuple(r) for r in states.tolist()} == {tuple(r) for r in expected.tolist()}
