"""Energy-prior losses: SSM expectation, gradient routing per group, IW closed form, bimodal fit."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_vsm import AdversarialPriorLoss, ImportanceWeightedPriorLoss, SSMPriorLoss
from pyro_vsm.distributions import EnergyDistribution, GRBMEnergy
from pyro_vsm.guides import GaussianVariationalPrior
from pyro_vsm.infer import NonFiniteLossError
from pyro_vsm.ops import sliced_score_matching

D64 = torch.float64


class GaussianEnergy(nn.Module):
    """E(z) = ½(z-μ)ᵀP(z-μ) + c with P = LLᵀ; exact log Z = d/2 log 2π - ½ log det P - c."""

    def __init__(self, mu, L, c=0.0):
        super().__init__()
        self.mu = nn.Parameter(torch.as_tensor(mu, dtype=D64).clone())
        self.L = nn.Parameter(torch.as_tensor(L, dtype=D64).clone())
        self.c = nn.Parameter(torch.tensor(float(c), dtype=D64))
        self.event_shape = torch.Size([self.mu.numel()])

    @property
    def precision(self):
        return self.L @ self.L.T

    def forward(self, z):
        r = z - self.mu
        return 0.5 * ((r @ self.precision) * r).sum(-1) + self.c

    def log_partition(self):
        d = self.mu.numel()
        return 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(self.precision) - self.c


def _energy(d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=D64) * 0.5
    L = torch.eye(d, dtype=D64) + 0.3 * torch.randn(d, d, generator=g, dtype=D64).tril(-1)
    return GaussianEnergy(mu, L, c=0.3)


class EnergyVAE:
    """p~(z) = e^{-E(z)} (Gaussian energy), p(x|z) = N(Wz + b, γI); q(z|x) = N(Ax + c, diag s²).

    The guide stashes its sample and the RNG state right after drawing it, so that a test can
    replay the random numbers (projections, variational-prior draws) a loss takes next.
    """

    def __init__(self, dx=3, dz=2, seed=0, energy=None):
        g = torch.Generator().manual_seed(seed)
        self.energy = _energy(dz, seed) if energy is None else energy
        self.W0 = torch.randn(dx, dz, generator=g, dtype=D64) * 0.8
        self.A0 = torch.randn(dz, dx, generator=g, dtype=D64) * 0.4
        self.dx, self.dz = dx, dz
        self.stash = []

    def model(self, x):
        pyro.module("energy", self.energy)
        W = pyro.param("dec_W", self.W0.clone())
        b = pyro.param("dec_b", torch.zeros(self.dx, dtype=D64))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", EnergyDistribution(self.energy))
            pyro.sample("x", dist.Normal(z @ W.T + b, 0.7).to_event(1), obs=x)

    def guide(self, x):
        A = pyro.param("enc_A", self.A0.clone())
        log_s = pyro.param("enc_log_s", torch.full((self.dz,), -0.5, dtype=D64))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x @ A.T, log_s.exp()).to_event(1))
        self.stash.append((z.detach(), torch.get_rng_state()))

    def data(self, n=8, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.dx, generator=g, dtype=D64)


def _grads(names):
    store = pyro.get_param_store()
    out = {}
    for n in names:
        p = store.get_param(n).unconstrained()
        out[n] = None if p.grad is None else p.grad.clone()
    return out


def _zero_grads():
    for _, p in pyro.get_param_store().named_parameters():
        p.grad = None


ENERGY = ["energy$$$mu", "energy$$$L", "energy$$$c"]
VAE = ["dec_W", "dec_b", "enc_A", "enc_log_s"]


# ---------------------------------------------------------------------------------------------
# sliced score matching = exact score matching in expectation
# ---------------------------------------------------------------------------------------------
def _exact_sm(energy, m, s):
    """E_{N(m, diag s²)}[½‖∇E‖² − ΔE] per row of m: ½[(m−μ)ᵀP²(m−μ) + tr(P² S)] − tr P."""
    P = energy.precision.detach()
    r = m - energy.mu.detach()
    P2 = P @ P
    return 0.5 * (((r @ P2) * r).sum(-1) + (P2.diagonal() * s**2).sum()) - P.trace()


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduction", [True, False])
def test_sliced_score_matching_is_exact_score_matching_in_expectation(
    projection, variance_reduction
):
    energy = _energy(3)
    torch.manual_seed(0)
    m, s = torch.tensor([0.5, -1.0, 2.0], dtype=D64), torch.tensor([0.5, 1.0, 0.8], dtype=D64)
    z = m + s * torch.randn(20000, 3, dtype=D64)
    j = sliced_score_matching(
        lambda v: -energy(v),
        z,
        projection=projection,
        variance_reduction=variance_reduction,
        num_projections=2,
        create_graph=False,
    )
    assert j.shape == (20000,)
    expected = _exact_sm(energy, m[None], s).item()
    se = (j.std() / j.numel() ** 0.5).item()
    assert abs(j.mean().item() - expected) < 4 * se, (j.mean().item(), expected, se)


@pytest.mark.parametrize("vectorize", [False, True])
def test_ssm_term_of_the_loss_is_exact_score_matching_in_expectation(vectorize):
    vae = EnergyVAE()
    x = vae.data(8)
    loss = SSMPriorLoss(num_particles=8, vectorize_particles=vectorize)
    values = torch.tensor([loss.terms(vae.model, vae.guide, x)["ssm"] for _ in range(30)])
    m = x @ vae.A0.T
    s = torch.full((2,), math.exp(-0.5), dtype=D64)
    expected = _exact_sm(vae.energy, m, s).sum().item()
    se = (values.std() / 30**0.5).item()
    assert abs(values.mean().item() - expected) < 4 * se, (values.mean().item(), expected, se)


# ---------------------------------------------------------------------------------------------
# gradient routing
# ---------------------------------------------------------------------------------------------
def _trace_elbo_grads(vae, x, seed):
    _zero_grads()
    pyro.set_rng_seed(seed)
    Trace_ELBO().loss_and_grads(vae.model, vae.guide, x)
    return _grads(VAE + ENERGY)


def test_ssm_routing_matches_separate_objectives():
    vae = EnergyVAE()
    x = vae.data(8)
    reference = _trace_elbo_grads(vae, x, seed=3)  # creates the params too
    _zero_grads()
    vae.stash.clear()
    pyro.set_rng_seed(3)
    loss = SSMPriorLoss()
    value = loss.loss_and_grads(vae.model, vae.guide, x)
    got = _grads(VAE + ENERGY)
    # decoder and guide: exactly the analogous ELBO's gradient (Trace_ELBO with the energy prior)
    for n in VAE:
        assert torch.allclose(got[n], reference[n], rtol=1e-10, atol=1e-12), n
    # energy: exactly the sliced score-matching gradient at the same z and projections
    z, state = vae.stash[0]
    torch.set_rng_state(state)
    j = sliced_score_matching(lambda v: -vae.energy(v), z)
    params = [pyro.param(n).unconstrained() for n in ENERGY]
    ssm_grads = torch.autograd.grad(j.sum(), params, allow_unused=True)
    for n, g in zip(ENERGY[:2], ssm_grads[:2], strict=True):
        assert torch.allclose(got[n], g, rtol=1e-10, atol=1e-12), n
        assert not torch.allclose(got[n], reference[n]), f"{n} got the ELBO gradient"
    # the constant offset does not change the score: no SSM gradient, although the ELBO has one
    assert ssm_grads[2] is None and got["energy$$$c"] is None
    assert reference["energy$$$c"].abs().item() > 1.0
    assert isinstance(value, float)


def test_importance_weighted_routing_is_eq7():
    vae = EnergyVAE()
    x = vae.data(8)
    K = 4
    _trace_elbo_grads(vae, x, seed=5)  # creates the params
    _zero_grads()
    vae.stash.clear()
    pyro.set_rng_seed(5)
    ImportanceWeightedPriorLoss(K).loss_and_grads(vae.model, vae.guide, x)
    got = _grads(VAE + ENERGY)
    # decoder and guide: the mean of K Trace_ELBO gradients; check against a replay
    zs = torch.stack([z for z, _ in vae.stash])  # (K, N, d)
    store = pyro.get_param_store()
    enc = [store.get_param(n).unconstrained() for n in VAE]
    # eq. 7 for the energy: -E_q[-∇E] - Σ_k w̄_k ∇E  (loss = -bound), per point, summed
    params = [store.get_param(n).unconstrained() for n in ENERGY]
    energies = vae.energy(zs)  # (K, N)
    A = pyro.param("enc_A")
    s = pyro.param("enc_log_s").exp()
    log_q = dist.Normal(x @ A.T, s).to_event(1).log_prob(zs).detach()
    w_bar = torch.softmax(-energies.detach() - log_q, 0)
    surrogate = energies.mean(0).sum() - (w_bar * energies).sum()
    expected = torch.autograd.grad(surrogate, params)
    for n, g in zip(ENERGY, expected, strict=True):
        assert torch.allclose(got[n], g, rtol=1e-9, atol=1e-10), n
    # decoder/guide: the ALB's reparametrised gradient at the same samples
    W, b = pyro.param("dec_W"), pyro.param("dec_b")
    eps = ((zs - x @ A.T) / s).detach()
    zr = x @ A.T + s * eps
    alb = (
        dist.Normal(zr @ W.T + b, 0.7).to_event(1).log_prob(x)
        - vae.energy(zr)
        - dist.Normal(x @ A.T, s).to_event(1).log_prob(zr)
    )
    expected = torch.autograd.grad(-alb.mean(0).sum(), enc)
    for n, g in zip(VAE, expected, strict=True):
        assert torch.allclose(got[n], g, rtol=1e-9, atol=1e-10), n


def test_adversarial_routing_matches_separate_objectives():
    vae = EnergyVAE()
    x = vae.data(8)
    reference = _trace_elbo_grads(vae, x, seed=7)
    _zero_grads()
    vae.stash.clear()
    torch.manual_seed(11)
    qz = GaussianVariationalPrior(2, dtype=D64)
    with torch.no_grad():
        qz.loc.add_(0.3)
    loss = AdversarialPriorLoss(qz)
    pyro.set_rng_seed(7)
    loss.loss_and_grads(vae.model, vae.guide, x)
    got = _grads(VAE + ENERGY)
    for n in VAE:
        assert torch.allclose(got[n], reference[n], rtol=1e-10, atol=1e-12), n
    z_post, state = vae.stash[0]
    torch.set_rng_state(state)
    z_neg = qz.rsample((8,))
    # energy: contrastive divergence E_post[E] - E_q'[E] only (the offset cancels exactly)
    params = [pyro.param(n).unconstrained() for n in ENERGY]
    cd = vae.energy(z_post).sum() - vae.energy(z_neg.detach()).sum()
    expected = torch.autograd.grad(cd, params)
    for n, g in zip(ENERGY, expected, strict=True):
        assert torch.allclose(got[n], g, rtol=1e-10, atol=1e-12), n
    assert got["energy$$$c"].item() == 0.0
    # variational prior: E_q'[E + log q'] only
    bound = (vae.energy(z_neg) + qz.log_prob(z_neg)).sum()
    expected = torch.autograd.grad(bound, list(qz.parameters()))
    for (name, p), g in zip(qz.named_parameters(), expected, strict=True):
        assert torch.allclose(p.grad, g, rtol=1e-10, atol=1e-12), name
    assert sorted(k for k in pyro.get_param_store().keys() if "variational" in k) == [
        "variational_prior_z$$$loc",
        "variational_prior_z$$$log_diag",
        "variational_prior_z$$$raw_tril",
    ]


def _snapshot(names):
    store = pyro.get_param_store()
    return {n: store[n].detach().clone() for n in names}


@pytest.mark.parametrize(
    "make",
    [
        lambda: SSMPriorLoss(num_particles=2),
        lambda: AdversarialPriorLoss(GaussianVariationalPrior(2, dtype=D64)),
    ],
    ids=["ssm", "adversarial"],
)
def test_energy_offset_untouched_under_adam(make):
    """The ELBO's gradient of the energy's constant offset is -N; score matching and contrastive
    divergence give exactly 0: under Adam the offset stays bit-identical only if no ELBO
    gradient leaks into the energy, while every other group moves."""
    vae = EnergyVAE()
    x = vae.data(8)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 0.05}), loss=make())
    svi.step(x)
    before = _snapshot(["energy$$$c", "energy$$$mu", "dec_W", "enc_A"])
    for _ in range(5):
        svi.step(x)
    after = _snapshot(before)
    assert torch.equal(before["energy$$$c"], after["energy$$$c"])
    for n in ["energy$$$mu", "dec_W", "enc_A"]:
        assert not torch.equal(before[n], after[n]), n
    # control: Trace_ELBO (the analogous bound for every group) moves the offset
    svi = SVI(vae.model, vae.guide, Adam({"lr": 0.05}), loss=Trace_ELBO())
    svi.step(x)
    assert not torch.equal(after["energy$$$c"], _snapshot(["energy$$$c"])["energy$$$c"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SSMPriorLoss(num_particles=2, vectorize_particles=True),
        lambda: ImportanceWeightedPriorLoss(3),
        lambda: AdversarialPriorLoss(GaussianVariationalPrior(2, dtype=D64), num_particles=2),
    ],
    ids=["ssm", "iw", "adversarial"],
)
def test_elbo_module_gradients_equal_svi_gradients(make):
    vae = EnergyVAE()
    x = vae.data(8)
    loss = make()
    _trace_elbo_grads(vae, x, seed=0)  # creates the params
    loss.loss(vae.model, vae.guide, x)  # guesses max_plate_nesting (a guide run) once
    _zero_grads()
    pyro.set_rng_seed(2)
    loss.loss_and_grads(vae.model, vae.guide, x)
    svi_grads = _grads(VAE + ENERGY)
    _zero_grads()
    pyro.set_rng_seed(2)
    value = loss.differentiable_loss(vae.model, vae.guide, x)
    value.backward()
    module_grads = _grads(VAE + ENERGY)
    for n in VAE + ENERGY:
        a, b = svi_grads[n], module_grads[n]
        if a is None or b is None:
            assert (a is None or not a.abs().any()) and (b is None or not b.abs().any()), n
        else:
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), n


def test_evaluate_loss_under_no_grad_and_terms():
    vae = EnergyVAE()
    x = vae.data(8)
    for loss in [
        SSMPriorLoss(),
        ImportanceWeightedPriorLoss(2),
        AdversarialPriorLoss(GaussianVariationalPrior(2, dtype=D64)),
    ]:
        svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=loss)
        with torch.no_grad():
            value = svi.evaluate_loss(x)
        assert math.isfinite(value)
        terms = loss.terms(vae.model, vae.guide, x)
        assert "neg_alb" in terms and math.isfinite(terms["loss"])


# ---------------------------------------------------------------------------------------------
# importance-weighted log Z: closed forms
# ---------------------------------------------------------------------------------------------
def _prior_matched_guide(energy):
    def guide(x):
        cov = torch.linalg.inv(energy.precision).detach()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(energy.mu.detach(), cov))

    return guide


@pytest.mark.parametrize("vectorize", [False, True])
def test_importance_weighted_value_matches_closed_form(vectorize):
    """With the guide equal to the normalised prior every importance weight is Z, so
    log Ẑ = log Z exactly and the loss is -E_p[log p(x|z)] (the negative ELBO, KL = 0)."""
    vae = EnergyVAE()
    x = vae.data(8)
    guide = _prior_matched_guide(vae.energy)
    loss = ImportanceWeightedPriorLoss(64, vectorize_particles=vectorize)
    log_z = vae.energy.log_partition().item()
    values = []
    for _ in range(10):
        terms = loss.terms(vae.model, guide, x)
        assert terms["log_z"] == pytest.approx(8 * log_z, rel=1e-10)
        values.append(terms["loss"])
    W, b = vae.W0, torch.zeros(3, dtype=D64)
    cov = torch.linalg.inv(vae.energy.precision).detach()
    mean = vae.energy.mu.detach()
    r = x - mean @ W.T - b
    gamma = 0.49
    expected_ll = -1.5 * math.log(2 * math.pi * gamma) - (
        (r**2).sum(-1) + torch.trace(W @ cov @ W.T)
    ) / (2 * gamma)
    expected = -expected_ll.sum().item()
    values = torch.tensor(values)
    se = (values.std() / len(values) ** 0.5).item()
    assert abs(values.mean().item() - expected) < 4 * se + 1e-9, (values.mean(), expected, se)


def test_importance_weighted_log_z_fails_with_the_posterior_as_proposal():
    """With the exact posterior as guide the ALB is log p(x) + log Z for every sample, but the
    posterior is a poor proposal for e^{-E}: log Ẑ is biased far below log Z (the failure of
    Section 2.1), approaching it only slowly as K grows."""
    vae = EnergyVAE()
    x = vae.data(4)
    P, mu = vae.energy.precision.detach(), vae.energy.mu.detach()
    W, gamma = vae.W0, 0.49
    post_prec = P + W.T @ W / gamma
    post_cov = torch.linalg.inv(post_prec)
    post_mean = torch.linalg.solve(post_prec, (P @ mu)[:, None] + W.T @ x.T / gamma).T

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post_mean, post_cov))

    log_px = dist.MultivariateNormal(
        mu @ W.T, W @ torch.linalg.inv(P) @ W.T + gamma * torch.eye(3, dtype=D64)
    ).log_prob(x)
    log_z = 4 * vae.energy.log_partition().item()

    def mean_log_z(k):
        loss = ImportanceWeightedPriorLoss(k, vectorize_particles=True)
        terms = [loss.terms(vae.model, guide, x) for _ in range(10)]
        for t in terms:
            assert t["neg_alb"] == pytest.approx(-(log_px.sum().item() + log_z), abs=1e-8)
        return sum(t["log_z"] for t in terms) / len(terms)

    small, large = mean_log_z(16), mean_log_z(256)
    # measured: 4 log Z = 6.15; mean log Ẑ ≈ 3.0 (K = 16), 4.1 (K = 256), 4.4 (K = 65536)
    assert small < large < log_z - 1.0, (small, large, log_z)


# ---------------------------------------------------------------------------------------------
# adversarial: the variational bound on log Z
# ---------------------------------------------------------------------------------------------
def test_adversarial_variational_prior_tightens_the_log_z_bound():
    vae = EnergyVAE()
    vae.energy.requires_grad_(False).train(False)  # a fixed prior: only ζ and the VAE learn
    x = vae.data(8)
    qz = GaussianVariationalPrior(2, dtype=D64)
    loss = AdversarialPriorLoss(qz, num_particles=4, vectorize_particles=True)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 0.05}), loss=loss)
    log_z = vae.energy.log_partition().item()
    first = loss.terms(vae.model, vae.guide, x)["log_z"] / 8
    for _ in range(250):
        svi.step(x)
    bounds = [loss.terms(vae.model, vae.guide, x)["log_z"] / 8 for _ in range(5)]
    assert first < log_z - 0.1
    assert sum(bounds) / 5 == pytest.approx(log_z, abs=0.02)


def test_adversarial_default_flow_is_a_registered_zuko_iaf():
    pytest.importorskip("zuko")
    vae = EnergyVAE(energy=GRBMEnergy(2, 3, dtype=D64))
    x = vae.data(8)
    loss = AdversarialPriorLoss(num_particles=2, vectorize_particles=True)
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=loss)
    values = [svi.step(x) for _ in range(3)]
    assert all(math.isfinite(v) for v in values)
    flow = loss.variational_prior("z")
    assert flow is not None and next(flow.parameters()).dtype == D64
    names = [k for k in pyro.get_param_store().keys() if k.startswith("variational_prior_z$$$")]
    assert len(names) == len(list(flow.parameters()))
    before = {n: pyro.param(n).detach().clone() for n in names}
    svi.step(x)
    assert any(not torch.equal(before[n], pyro.param(n)) for n in names)


# ---------------------------------------------------------------------------------------------
# SSM fits a bimodal aggregate posterior
# ---------------------------------------------------------------------------------------------
def test_ssm_prior_fits_a_bimodal_aggregate_posterior():
    """Fixed guide q(z|x) = N(2x, 0.5²) on x = ±1: the aggregate posterior is the mixture
    ½N(-2, 0.25) + ½N(2, 0.25). The GRBM prior (one hidden unit: a two-Gaussian mixture with an
    exact mixture representation) trained by SSMPriorLoss puts mass on both modes."""
    x = torch.cat([torch.ones(32), -torch.ones(32)])[:, None]
    energy = GRBMEnergy(1, 1)

    def model(x):
        pyro.module("energy", energy)
        w = pyro.param("w", torch.tensor(0.1))
        b = pyro.param("b", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", EnergyDistribution(energy))
            pyro.sample("x", dist.Normal(w * z + b, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(2 * x, 0.5).to_event(1))

    loss = SSMPriorLoss(num_particles=4, vectorize_particles=True)
    svi = SVI(model, guide, Adam({"lr": 0.05}), loss=loss)
    for _ in range(250):
        svi.step(x)
    with torch.no_grad():
        log_w, means, scale = energy.mixture_components()
        comp = torch.distributions.Normal(means[:, 0], scale[0])
        weights = log_w.exp()

        def mass(lo, hi):
            return float(
                (weights * (comp.cdf(torch.tensor(hi)) - comp.cdf(torch.tensor(lo)))).sum()
            )

        near_minus, near_plus = mass(-3.0, -1.0), mass(1.0, 3.0)
    # measured: weights ~(0.45, 0.55), means ~(-2.0, 2.0), sigma ~0.51; mass ~0.42 / 0.53
    assert near_minus > 0.3 and near_plus > 0.3, (near_minus, near_plus)
    assert sorted(means[:, 0].tolist()) == pytest.approx([-2.0, 2.0], abs=0.25)
    assert scale.item() == pytest.approx(0.5, abs=0.1)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def _normal_prior_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def _guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))


@pytest.mark.parametrize(
    "make",
    [
        SSMPriorLoss,
        ImportanceWeightedPriorLoss,
        lambda: AdversarialPriorLoss(GaussianVariationalPrior(2)),
    ],
)
def test_model_without_energy_site_is_a_clear_error(make):
    x = torch.randn(4, 1)
    with pytest.raises(ValueError, match="no latent sample site with an energy-based"):
        make().loss(_normal_prior_model, _guide, x)
    svi = SVI(_normal_prior_model, _guide, Adam({"lr": 1e-3}), loss=make())
    with pytest.raises(ValueError, match="'z'"):
        svi.step(x)


def test_unregistered_energy_and_unnormalized_observation_are_errors():
    energy = GRBMEnergy(2, 2)

    def model(x):  # forgets pyro.module("energy", energy)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", EnergyDistribution(energy))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    x = torch.randn(4, 1)
    with pytest.raises(ValueError, match="pyro.module"):
        SSMPriorLoss().loss_and_grads(model, _guide, x)

    def observed_energy(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", EnergyDistribution(GRBMEnergy(1, 2)), obs=x)

    with pytest.raises(ValueError, match="observed site 'x' has an unnormalized"):
        SSMPriorLoss().loss(observed_energy, lambda x: None, x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="projection"):
        SSMPriorLoss(projection="uniform")
    with pytest.raises(ValueError, match="num_projections"):
        SSMPriorLoss(num_projections=0)
    with pytest.raises(ValueError, match="num_particles"):
        SSMPriorLoss(num_particles=0)
    with pytest.raises(ValueError, match="disagree"):
        ImportanceWeightedPriorLoss(4, num_particles=3)
    assert ImportanceWeightedPriorLoss(num_particles=3).num_samples == 3
    with pytest.raises(ValueError, match="torch.nn.Module"):
        AdversarialPriorLoss(variational_prior=dist.Normal(0.0, 1.0))


def test_non_finite_loss_raises_before_a_step():
    vae = EnergyVAE()
    x = vae.data(4)
    x[0, 0] = float("nan")
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=SSMPriorLoss())
    with pyro.validation_enabled(False), pytest.raises(NonFiniteLossError, match="neg_alb.*step 0"):
        svi.step(x)


def test_constructible_without_arguments():
    for cls in (SSMPriorLoss, ImportanceWeightedPriorLoss, AdversarialPriorLoss):
        assert isinstance(cls(), pyro.infer.ELBO)


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        SSMPriorLoss,
        ImportanceWeightedPriorLoss,
        lambda **kw: AdversarialPriorLoss(GaussianVariationalPrior(2, device="meta"), **kw),
    ],
    ids=["ssm", "iw", "adversarial"],
)
def test_losses_run_on_meta(make, vectorize):
    """Every tensor the losses create takes its device from the inputs (see test_device.py)."""
    pyro.enable_validation(False)
    energy = GaussianEnergy(torch.zeros(2), torch.eye(2)).to(device="meta", dtype=torch.float32)
    W = torch.empty(3, 2, device="meta")

    def model(x):
        pyro.module("energy", energy)
        w = pyro.param("dec_W", W)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", EnergyDistribution(energy))
            pyro.sample("x", dist.Normal(z @ w.T, 1.0).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("enc_A", torch.empty(2, 3, device="meta"))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ a.T, 1.0).to_event(1))

    x = torch.empty(8, 3, device="meta")
    kwargs = dict(num_particles=3, vectorize_particles=vectorize)
    if vectorize:
        kwargs["max_plate_nesting"] = 1
    value = make(**kwargs).differentiable_loss(model, guide, x)
    assert value.device.type == "meta"
    value.backward()


class _ScoreFunctionNormal(dist.Normal):
    has_rsample = False


def test_non_reparametrised_guide_gets_trace_elbo_score_function_gradients():
    """Guide sites without rsample: the ALB part is Trace_ELBO's estimator (score function)."""
    vae = EnergyVAE()
    x = vae.data(8)

    def score_guide(x):
        A = pyro.param("enc_A", vae.A0.clone())
        log_s = pyro.param("enc_log_s", torch.full((2,), -0.5, dtype=D64))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _ScoreFunctionNormal(x @ A.T, log_s.exp()).to_event(1))

    _zero_grads()
    pyro.set_rng_seed(4)
    Trace_ELBO().loss_and_grads(vae.model, score_guide, x)
    reference = _grads(VAE)
    _zero_grads()
    pyro.set_rng_seed(4)
    SSMPriorLoss().loss_and_grads(vae.model, score_guide, x)
    got = _grads(VAE + ENERGY)
    for n in VAE:
        assert torch.allclose(got[n], reference[n], rtol=1e-10, atol=1e-12), n
    assert got["energy$$$mu"] is not None
