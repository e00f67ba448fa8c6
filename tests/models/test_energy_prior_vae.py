"""EnergyPriorVAE, VampPriorVAE and energy_prior_log_likelihood."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_vsm import AdversarialPriorLoss, ImportanceWeightedPriorLoss, SSMPriorLoss
from pyro_vsm.distributions import EnergyDistribution, GRBMEnergy, MLPEnergy
from pyro_vsm.evaluation import energy_prior_log_likelihood
from pyro_vsm.guides import DiagonalNormalEncoder, GaussianVariationalPrior
from pyro_vsm.models import EnergyPriorVAE, VampPriorVAE, mlp

D64 = torch.float64


def _trace(model, guide, x):
    guide_trace = pyro.poutine.trace(guide).get_trace(x)
    return pyro.poutine.trace(pyro.poutine.replay(model, guide_trace)).get_trace(x)


# ---------------------------------------------------------------------------------------------
# EnergyPriorVAE
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("obs", ["gaussian", "bernoulli"])
def test_energy_prior_vae_sites_and_params(obs):
    model = EnergyPriorVAE(mlp(2, (8,), 3), GRBMEnergy(2, 3), obs=obs)
    guide = DiagonalNormalEncoder.mlp(3, 2, hidden=(8,))
    x = torch.randint(0, 2, (5, 3)).float()
    tr = _trace(model, guide, x)
    fn = tr.nodes["z"]["fn"]
    assert isinstance(fn, EnergyDistribution) and fn.batch_shape == (5,)
    assert tr.nodes["z"]["cond_indep_stack"][0].name == "data"
    assert tr.nodes["x"]["fn"].event_shape == (3,)
    if obs == "bernoulli":
        assert isinstance(tr.nodes["x"]["fn"].base_dist, dist.Bernoulli)
        assert model.variance() is None
        assert torch.all((model.decode(torch.zeros(2)) > 0) & (model.decode(torch.zeros(2)) < 1))
    tr.compute_log_prob()
    z = tr.nodes["z"]["value"]
    assert torch.allclose(tr.nodes["z"]["log_prob"], -model.energy(z))


@pytest.mark.parametrize(
    "make",
    [
        lambda: SSMPriorLoss(num_particles=2, vectorize_particles=True),
        lambda: ImportanceWeightedPriorLoss(2),
        lambda: AdversarialPriorLoss(GaussianVariationalPrior(2), num_particles=2),
    ],
    ids=["ssm", "iw", "adversarial"],
)
def test_energy_prior_vae_trains_every_group(make):
    torch.manual_seed(0)
    model = EnergyPriorVAE(mlp(2, (8,), 3), GRBMEnergy(2, 3))
    guide = DiagonalNormalEncoder.mlp(3, 2, hidden=(8,))
    x = torch.randn(16, 3)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=make())
    svi.step(x)
    store = pyro.get_param_store()
    names = ["energy.W", "energy.mu", "decoder.0.weight", "encoder.0.weight", "gamma"]
    before = {n: store[n].detach().clone() for n in names}
    values = [svi.step(x, num_data=64) for _ in range(3)]
    assert all(math.isfinite(v) for v in values)
    for n in names:
        assert not torch.equal(before[n], store[n]), n


@pytest.mark.parametrize(
    "make",
    [
        lambda: SSMPriorLoss(num_particles=2),
        lambda: ImportanceWeightedPriorLoss(2),
        lambda: AdversarialPriorLoss(GaussianVariationalPrior(2), num_particles=2),
    ],
    ids=["ssm", "iw", "adversarial"],
)
def test_energy_prior_vae_with_a_torch_optimizer(make):
    """loss(model, guide) -> ELBOModule: every group gets a gradient and a plain torch loop runs."""
    with pyro.settings.context(module_local_params=True):
        torch.manual_seed(0)
        model = EnergyPriorVAE(mlp(2, (8,), 3), GRBMEnergy(2, 3))
        guide = DiagonalNormalEncoder.mlp(3, 2, hidden=(8,))
        x = torch.randn(16, 3)
        module = make()(model, guide)
        module(x).backward()
        assert all(p.grad is not None for p in module.parameters())
        opt = torch.optim.Adam(module.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            value = module(x)
            value.backward()
            opt.step()
        assert math.isfinite(value.item())


def test_energy_prior_vae_options_and_errors():
    dec = mlp(2, (4,), 3)
    assert EnergyPriorVAE(dec, GRBMEnergy(2, 2), gamma=0.3).variance().item() == pytest.approx(0.3)
    diag = EnergyPriorVAE(mlp(2, (4,), 3), GRBMEnergy(2, 2), gamma="diagonal", obs_shape=(3,))
    assert diag.variance().shape == (3,)
    with pytest.raises(ValueError, match="obs must be one of"):
        EnergyPriorVAE(mlp(2, (4,), 3), GRBMEnergy(2, 2), obs="poisson")
    with pytest.raises(ValueError, match="obs_shape"):
        EnergyPriorVAE(mlp(2, (4,), 3), GRBMEnergy(2, 2), gamma="diagonal")
    with pytest.raises(ValueError, match="gamma must be"):
        EnergyPriorVAE(mlp(2, (4,), 3), GRBMEnergy(2, 2), gamma=-1.0)
    with pytest.raises(ValueError, match="torch.nn.Module"):
        EnergyPriorVAE(mlp(2, (4,), 3), lambda z: z.pow(2).sum(-1))
    with pytest.raises(ValueError, match="event_shape"):
        EnergyPriorVAE(mlp(2, (4,), 3), nn.Linear(2, 1))
    with pytest.raises(ValueError, match="decoder"):
        EnergyPriorVAE(lambda z: z, GRBMEnergy(2, 2))


@pytest.mark.parametrize(
    "energy", [GRBMEnergy(2, 3), MLPEnergy(2, hidden=(8,))], ids=["grbm", "mlp"]
)
def test_energy_prior_vae_generates_from_the_prior(energy):
    model = EnergyPriorVAE(mlp(2, (4,), 3), energy)
    z, x = model.generate(6)
    assert z.shape == (6, 2) and x.shape == (6, 3)
    assert torch.isfinite(x).all() and not x.requires_grad


# ---------------------------------------------------------------------------------------------
# VampPriorVAE
# ---------------------------------------------------------------------------------------------
def test_vampprior_is_the_mixture_of_encoder_posteriors_at_pseudo_inputs():
    torch.manual_seed(0)
    guide = DiagonalNormalEncoder.mlp(3, 2, hidden=(8,))
    model = VampPriorVAE(mlp(2, (8,), 3), guide, num_pseudo_inputs=4, obs_shape=(3,))
    x = torch.randn(6, 3)
    tr = _trace(model, guide, x)
    z = tr.nodes["z"]["value"]
    q = guide.distribution(model.pseudo_inputs)  # batch (4,), event (2,)
    expected = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - math.log(4)
    assert torch.allclose(tr.nodes["z"]["fn"].log_prob(z), expected, atol=1e-6)
    assert model.latent_dim == 2
    z_prior, x_prior = model.generate(5)
    assert z_prior.shape == (5, 2) and x_prior.shape == (5, 3)


def test_vampprior_trains_pseudo_inputs_with_trace_elbo():
    torch.manual_seed(0)
    guide = DiagonalNormalEncoder.mlp(3, 2, hidden=(8,))
    model = VampPriorVAE(
        mlp(2, (8,), 3), guide, num_pseudo_inputs=4, obs="bernoulli", obs_shape=(3,)
    )
    x = torch.randint(0, 2, (16, 3)).float()
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=Trace_ELBO(num_particles=2))
    svi.step(x)
    store = pyro.get_param_store()
    names = ["pseudo_inputs", "decoder.0.weight", "encoder.encoder.0.weight"]
    before = {n: store[n].detach().clone() for n in names}
    for _ in range(3):
        svi.step(x)
    for n in names:
        assert not torch.equal(before[n], store[n]), n
    assert "gamma" not in store  # Bernoulli observations


def test_vampprior_errors_and_pseudo_input_init():
    guide = DiagonalNormalEncoder.mlp(3, 2)
    u = torch.rand(5, 3)
    model = VampPriorVAE(mlp(2, (4,), 3), guide, num_pseudo_inputs=5, pseudo_inputs=u)
    assert torch.equal(model.pseudo_inputs.detach(), u)
    bern = VampPriorVAE(mlp(2, (4,), 3), guide, 7, obs="bernoulli", obs_shape=(3,))
    assert bern.pseudo_inputs.shape == (7, 3)
    with pytest.raises(ValueError, match="distribution"):
        VampPriorVAE(mlp(2, (4,), 3), nn.Linear(3, 4), 3, obs_shape=(3,))
    with pytest.raises(ValueError, match="pseudo_inputs must have shape"):
        VampPriorVAE(mlp(2, (4,), 3), guide, 4, pseudo_inputs=u)
    with pytest.raises(ValueError, match="obs_shape or pseudo_inputs"):
        VampPriorVAE(mlp(2, (4,), 3), guide, 4)
    with pytest.raises(ValueError, match="num_pseudo_inputs"):
        VampPriorVAE(mlp(2, (4,), 3), guide, 0, obs_shape=(3,))


# ---------------------------------------------------------------------------------------------
# energy_prior_log_likelihood against exact values
# ---------------------------------------------------------------------------------------------
class GaussianEnergy(nn.Module):
    """E(z) = ½(z-μ)ᵀP(z-μ) + c with its exact log-partition function."""

    def __init__(self, mu, P, c=0.7):
        super().__init__()
        self.mu = nn.Parameter(mu.clone())
        self.P = P
        self.c = nn.Parameter(torch.tensor(c, dtype=mu.dtype))
        self.event_shape = torch.Size([mu.numel()])

    def forward(self, z):
        r = z - self.mu
        return 0.5 * ((r @ self.P) * r).sum(-1) + self.c

    def log_partition(self):
        d = self.mu.numel()
        return 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(self.P) - self.c


class LinearGaussianEnergyModel:
    """z ~ e^{-E(z)} (Gaussian energy), x | z ~ N(Wz + b, γI), with the exact posterior."""

    def __init__(self, dx=3, dz=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(dz, dz, generator=g, dtype=D64) * 0.4
        self.energy = GaussianEnergy(
            torch.randn(dz, generator=g, dtype=D64), A @ A.T + torch.eye(dz, dtype=D64)
        )
        self.W = torch.randn(dx, dz, generator=g, dtype=D64)
        self.b = torch.randn(dx, generator=g, dtype=D64) * 0.3
        self.gamma = 0.5
        self.dx = dx

    def model(self, x):
        pyro.module("energy", self.energy)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", EnergyDistribution(self.energy))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.gamma**0.5).to_event(1), obs=x)

    def posterior(self, x):
        P, mu = self.energy.P, self.energy.mu.detach()
        prec = P + self.W.T @ self.W / self.gamma
        mean = torch.linalg.solve(prec, (P @ mu)[:, None] + self.W.T @ (x - self.b).T / self.gamma)
        return mean.T, torch.linalg.inv(prec)

    def guide(self, x):
        mean, cov = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, cov))

    def log_marginal(self, x):
        cov = self.W @ torch.linalg.inv(self.energy.P) @ self.W.T
        cov = cov + self.gamma * torch.eye(self.dx, dtype=D64)
        return dist.MultivariateNormal(self.energy.mu.detach() @ self.W.T + self.b, cov).log_prob(x)

    def data(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.dx, generator=g, dtype=D64) * 2


def test_log_likelihood_is_exact_for_linear_gaussian_with_gaussian_energy():
    lg = LinearGaussianEnergyModel()
    x = lg.data(6)
    exact = lg.log_marginal(x)
    est, used = energy_prior_log_likelihood(
        lg.model, lg.guide, x, num_samples=10, return_log_z=True
    )
    assert torch.allclose(est, exact, atol=1e-9, rtol=0)
    assert used["z"].item() == pytest.approx(lg.energy.log_partition().item())
    ais = energy_prior_log_likelihood(
        lg.model, lg.guide, x, method="ais", num_temperatures=5, num_chains=2
    )
    assert torch.allclose(ais, exact, atol=1e-8, rtol=0)
    # without subtracting log Z the estimate is log p(x) + log Z
    unnormalized = energy_prior_log_likelihood(lg.model, lg.guide, x, num_samples=4, log_z=0.0)
    assert torch.allclose(unnormalized - used["z"], exact, atol=1e-9, rtol=0)


def _grbm_vae(seed=0):
    """A GRBM prior that is a four-component mixture of comparable weights (the corners of a
    square, σ = 0.7) and a linear decoder."""
    torch.manual_seed(seed)
    energy = GRBMEnergy(2, 2, dtype=D64)
    with torch.no_grad():
        energy.W.copy_(torch.tensor([[2.0, 0.3], [-0.2, 2.0]], dtype=D64))
        energy.log_sigma.fill_(math.log(0.7))
        energy.mu.fill_(-1.0)
        balance = -(energy.W**2).sum(0) / (2 * 0.49) - energy.W.T @ energy.mu / 0.49
        energy.b.copy_(balance + torch.tensor([0.3, -0.2], dtype=D64))
    decoder = nn.Linear(2, 3, dtype=D64)
    return EnergyPriorVAE(decoder, energy, gamma=0.4)


def _grbm_exact(vae, x):
    """Exact log p(x) and the exact mixture posterior of the GRBM-prior linear-Gaussian VAE."""
    with torch.no_grad():
        log_w, means, sigma = vae.energy.mixture_components()
        W, b = vae.decoder.weight.detach(), vae.decoder.bias.detach()
        gamma = 0.4
        prior_cov = torch.diag(sigma**2)
        marg_cov = W @ prior_cov @ W.T + gamma * torch.eye(3, dtype=D64)
        comp = dist.MultivariateNormal(means @ W.T + b, marg_cov)  # batch (2^H,)
        joint = log_w + comp.log_prob(x[:, None, :])  # (N, 2^H)
        log_px = torch.logsumexp(joint, -1)
        post_prec = torch.diag(sigma**-2) + W.T @ W / gamma
        post_cov = torch.linalg.inv(post_prec)
        rhs = (means / sigma**2)[None] + ((x - b) @ W / gamma)[:, None, :]  # (N, 2^H, d)
        post_means = rhs @ post_cov  # post_cov symmetric
        post_logits = joint - log_px[:, None]
    return log_px, post_logits, post_means, post_cov


def test_log_likelihood_is_exact_for_a_grbm_prior_vae():
    """GRBM prior (a mixture of 2^H Gaussians, exact log Z), linear decoder, exact mixture
    posterior as guide: the importance estimate equals the exact log p(x); with log Z from AIS
    instead it is close (and optimistic in expectation)."""
    vae = _grbm_vae()
    x = torch.randn(5, 3, dtype=D64) * 2
    log_px, logits, post_means, post_cov = _grbm_exact(vae, x)

    def guide(x):
        mix = dist.MixtureSameFamily(
            dist.Categorical(logits=logits), dist.MultivariateNormal(post_means, post_cov)
        )
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", mix)

    est = energy_prior_log_likelihood(vae, guide, x, num_samples=8)
    assert torch.allclose(est, log_px, atol=1e-8, rtol=0)
    torch.manual_seed(0)
    est_ais, used = energy_prior_log_likelihood(
        vae,
        guide,
        x,
        num_samples=8,
        log_z_method="ais",
        log_partition_kwargs=dict(num_temperatures=200, num_chains=32, base_scale=3.0),
        return_log_z=True,
    )
    exact_log_z = vae.energy.log_partition().item()
    # measured (3 seeds): AIS log Z 2.734, 2.724, 2.668 against the exact 2.700 (200
    # temperatures, 32 chains); the log-likelihoods move by the same amount
    assert used["z"].item() == pytest.approx(exact_log_z, abs=0.1)
    assert torch.allclose(est_ais, log_px, atol=0.1, rtol=0)


def test_log_likelihood_options_and_errors():
    lg = LinearGaussianEnergyModel()
    x = lg.data(3)
    a = energy_prior_log_likelihood(lg.model, lg.guide, x, num_samples=2, log_z={"z": 1.5})
    b = energy_prior_log_likelihood(lg.model, lg.guide, x, num_samples=2, log_z=torch.tensor(1.5))
    assert torch.allclose(a, b)
    est, diagnostics = energy_prior_log_likelihood(
        lg.model, lg.guide, x, num_samples=20, return_diagnostics=True
    )
    assert est.shape == (3,) and diagnostics.log_weights.shape == (20, 3)
    with pytest.raises(ValueError, match="method must be"):
        energy_prior_log_likelihood(lg.model, lg.guide, x, method="exact")
    with pytest.raises(ValueError, match="not energy sites"):
        energy_prior_log_likelihood(lg.model, lg.guide, x, log_z={"w": 0.0})
    with pytest.raises(ValueError, match="guide is needed"):
        energy_prior_log_likelihood(lg.model, None, x)

    def normal_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T, 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match="no latent site with an unnormalized"):
        energy_prior_log_likelihood(normal_model, lg.guide, x)
