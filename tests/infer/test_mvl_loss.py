"""MVLLoss and MVLPriorLoss: fits against closed forms, routing, values, bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_vsm import MVLLoss, MVLPriorLoss
from pyro_vsm.distributions import EnergyDistribution, VonMisesFisher
from pyro_vsm.infer.mvl import langevin_mvl
from pyro_vsm.ops import sliced_score_matching

D64 = torch.float64


class GaussianEnergy(nn.Module):
    """E(x) = ½(x − μ)ᵀ LLᵀ (x − μ): a Gaussian model with learnable mean and precision."""

    def __init__(self, d):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(d, dtype=D64))
        self.L = nn.Parameter(torch.eye(d, dtype=D64))
        self.event_shape = torch.Size([d])

    def forward(self, x):
        r = (x - self.mu) @ self.L
        return 0.5 * r.pow(2).sum(-1)


def _model(energy, support=None):
    def model(x, num_data=None):
        pyro.module("energy", energy)
        n = x.shape[0]
        plate = pyro.plate("data", num_data or n, subsample=torch.arange(n) if num_data else None)
        with plate:
            pyro.sample("x", EnergyDistribution(energy, support=support), obs=x)

    return model


def _guide(x, num_data=None):
    pass


@pytest.mark.parametrize("estimator", ["langevin", "dsm", "cd1", "ssm"])
def test_gaussian_fit_recovers_mean_and_precision(estimator):
    """Score matching is consistent for a Gaussian model: the fit reaches the data's moments."""
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([1.0, -0.5], dtype=D64)
    chol = torch.tensor([[1.0, 0.0], [0.6, 0.5]], dtype=D64)
    x = mean + torch.randn(4000, 2, generator=g, dtype=D64) @ chol.T
    energy = GaussianEnergy(2)
    loss = MVLLoss(step_size=1e-3, estimator=estimator)
    svi = SVI(_model(energy), _guide, Adam({"lr": 0.05}), loss=loss)
    for _ in range(400):
        svi.step(x[torch.randint(4000, (500,), generator=g)], 4000)
    precision = (energy.L @ energy.L.T).detach()
    cov = torch.cov(x.T)
    assert torch.allclose(energy.mu.detach(), x.mean(0), atol=0.08), energy.mu
    assert torch.allclose(precision, torch.linalg.inv(cov), rtol=0.15, atol=0.15), precision


def test_value_is_the_estimate_summed_over_the_plate():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=g, dtype=D64)
    energy = GaussianEnergy(3)
    with torch.no_grad():
        energy.L.mul_(1.3)
    loss = MVLLoss(step_size=1e-3)
    pyro.set_rng_seed(4)
    value = loss.loss(_model(energy), _guide, x)
    pyro.set_rng_seed(4)
    direct = langevin_mvl(energy, x, 1e-3).sum()
    assert value == pytest.approx(float(direct.detach()), rel=1e-12)


def test_cd1_reports_sliced_score_matching_not_its_surrogate():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 2, generator=g, dtype=D64)
    energy = GaussianEnergy(2)
    loss = MVLLoss(step_size=1e-3, estimator="cd1")
    pyro.set_rng_seed(0)
    values = torch.tensor([loss.loss(_model(energy), _guide, x) for _ in range(40)], dtype=D64)
    # exact J of N(0, I) on this data: ½‖x‖² − d
    exact = float((0.5 * x.pow(2).sum(-1) - 2).sum())
    se = values.std() / math.sqrt(len(values))
    assert abs(values.mean() - exact) < 4 * se + 1e-9
    # the surrogate's value is J + ½‖∇E‖², far from J
    assert float((0.5 * x.pow(2).sum(-1)).sum()) > 10 * float(se)


def test_sphere_vmf_fit_recovers_kappa_mu():
    """E(x) = −ηᵀx on S² is a vMF with κμ = η: MVLLoss(manifold='sphere') recovers it."""
    kappa_mu = torch.tensor([0.0, 2.0, 2.0], dtype=D64)
    vmf = VonMisesFisher(kappa_mu / kappa_mu.norm(), kappa_mu.norm())
    pyro.set_rng_seed(0)
    x = vmf.sample((4000,))
    eta = nn.Parameter(torch.zeros(3, dtype=D64))

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.eta = eta
            self.event_shape = torch.Size([3])

        def forward(self, y):
            return -(y * self.eta).sum(-1)

    energy = Linear()
    loss = MVLLoss(step_size=1e-3, manifold="sphere")
    svi = SVI(_model(energy, constraints.sphere), _guide, Adam({"lr": 0.05}), loss=loss)
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        svi.step(x[torch.randint(4000, (500,), generator=g)], 4000)
    assert torch.allclose(eta.detach(), kappa_mu, atol=0.2), eta


def test_bad_input_is_a_clear_error():
    energy = GaussianEnergy(2)
    x = torch.randn(10, 2, dtype=D64)

    def latent_model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10):
            pyro.sample(
                "x", EnergyDistribution(lambda y: (y - z).pow(2).sum(-1), event_shape=(2,)), obs=x
            )

    def normal_model(x):
        with pyro.plate("data", 10):
            pyro.sample("x", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1), obs=x)

    loss = MVLLoss()
    with pytest.raises(ValueError, match="latent site 'z'"):
        loss.loss(latent_model, _guide, x)
    with pytest.raises(ValueError, match="observed site 'x' is a Independent"):
        loss.loss(normal_model, _guide, x)
    with pytest.raises(ValueError, match="non-finite"):
        loss.loss(_model(energy), _guide, x.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="manifold='sphere'"):
        loss.loss(_model(energy, constraints.sphere), _guide, x / x.norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="site 'x' must lie on the unit sphere"):
        MVLLoss(manifold="sphere").loss(_model(energy, constraints.sphere), _guide, 2 * x)
    for kwargs, match in [
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": True}, "step_size"),
        ({"estimator": "nope"}, "estimator"),
        ({"manifold": "torus"}, "manifold"),
        ({"manifold": "sphere", "estimator": "dsm"}, "manifold='sphere'"),
        ({"control_variate": 1}, "control_variate"),
        ({"estimator": "spos", "alpha": -1.0}, "alpha"),
    ]:
        with pytest.raises(ValueError, match=match):
            MVLLoss(**kwargs)


class EnergyVAE:
    """p~(z) = e^{-E(z)} (Gaussian energy), p(x|z) = N(Wz, 0.7²I); q(z|x) = N(Ax, diag s²)."""

    def __init__(self):
        self.energy = GaussianEnergy(2)
        g = torch.Generator().manual_seed(0)
        self.W0 = torch.randn(3, 2, generator=g, dtype=D64)
        self.A0 = torch.randn(2, 3, generator=g, dtype=D64) * 0.4
        self.stash = []

    def model(self, x):
        pyro.module("energy", self.energy)
        W = pyro.param("dec_W", self.W0.clone())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", EnergyDistribution(self.energy))
            pyro.sample("x", dist.Normal(z @ W.T, 0.7).to_event(1), obs=x)

    def guide(self, x):
        A = pyro.param("enc_A", self.A0.clone())
        log_s = pyro.param("enc_log_s", torch.full((2,), -0.5, dtype=D64))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x @ A.T, log_s.exp()).to_event(1))
        self.stash.append((z.detach(), torch.get_rng_state()))


VAE_PARAMS = ["dec_W", "enc_A", "enc_log_s"]
ENERGY = ["energy$$$mu", "energy$$$L"]


def _grads(names):
    store = pyro.get_param_store()
    return {n: store.get_param(n).unconstrained().grad for n in names}


@pytest.mark.parametrize("estimator", ["langevin", "dsm"])
def test_prior_loss_routing(estimator):
    vae = EnergyVAE()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=D64)
    pyro.set_rng_seed(3)
    Trace_ELBO().loss_and_grads(vae.model, vae.guide, x)
    reference = {n: g.clone() for n, g in _grads(VAE_PARAMS).items()}
    for _, p in pyro.get_param_store().named_parameters():
        p.grad = None
    vae.stash.clear()
    pyro.set_rng_seed(3)
    loss = MVLPriorLoss(step_size=1e-3, estimator=estimator)
    loss.loss_and_grads(vae.model, vae.guide, x)
    got = _grads(VAE_PARAMS + ENERGY)
    # decoder and guide: exactly the analogous ELBO's gradient
    for n in VAE_PARAMS:
        assert torch.allclose(got[n], reference[n], rtol=1e-10, atol=1e-12), n
    # the energy: exactly the estimator's gradient at the same (detached) z and noise
    z, state = vae.stash[0]
    torch.set_rng_state(state)
    fn = {"langevin": langevin_mvl, "dsm": __import__("pyro_vsm.infer.mvl", fromlist=["dsm"]).dsm}
    j = fn[estimator](vae.energy, z, 1e-3)
    params = [pyro.param(n).unconstrained() for n in ENERGY]
    direct = torch.autograd.grad(j.sum(), params)
    for n, g in zip(ENERGY, direct, strict=True):
        assert torch.allclose(got[n], g, rtol=1e-9, atol=1e-12), n


def test_prior_loss_value_matches_ssm_in_expectation():
    """The energy's term estimates J like SSMPriorLoss's: compare with SSM at the same z."""
    vae = EnergyVAE()
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(5), dtype=D64)
    loss = MVLPriorLoss(step_size=1e-4)
    vae.guide(x)
    pyro.set_rng_seed(0)
    diffs = []
    for _ in range(30):
        vae.stash.clear()
        loss.loss_and_grads(vae.model, vae.guide, x)
        for _, p in pyro.get_param_store().named_parameters():
            p.grad = None
        z = vae.stash[0][0]
        j = sliced_score_matching(lambda v: -vae.energy(v), z, projection="gaussian")
        ssm = float(j.sum().detach())
        diffs.append(float(loss.last_terms["mvl"]) - ssm)
    d = torch.tensor(diffs)
    assert abs(d.mean()) < 4 * d.std() / math.sqrt(len(d)) + 1e-6
