"""A VAE written in plain Pyro style (as Pyro's VAE tutorial) trains with every loss."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_vsm import (
    AdversarialPriorLoss,
    BetaELBO,
    ImportanceWeightedPriorLoss,
    JointFisherLoss,
    LaggingInferenceELBO,
    LiBILoss,
    M1Loss,
    M2Loss,
    M3Loss,
    SSMPriorLoss,
)
from pyro_vsm.distributions import EnergyDistribution
from pyro_vsm.guides import GaussianVariationalPrior


class Encoder(nn.Module):
    def __init__(self, x_dim, z_dim, hidden=16):
        super().__init__()
        self.fc = nn.Linear(x_dim, hidden)
        self.loc = nn.Linear(hidden, z_dim)
        self.scale = nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-3


class Decoder(nn.Module):
    def __init__(self, z_dim, x_dim, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)


class VAE(nn.Module):
    def __init__(self, x_dim=2, z_dim=2):
        super().__init__()
        self.encoder, self.decoder, self.z_dim = Encoder(x_dim, z_dim), Decoder(z_dim, x_dim), z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        log_sigma = pyro.param("log_sigma", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(self.decoder(z), log_sigma.exp()).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))


LOSSES = {
    "trace_elbo": lambda: Trace_ELBO(),
    "m1_kl": lambda: M1Loss(inference="kl", guide_steps=1),
    "m1_fisher": lambda: M1Loss(inference="fisher", guide_steps=2, num_particles=2),
    "m1_fisher_reparam": lambda: M1Loss(
        inference="fisher-reparam", num_particles=2, vectorize_particles=True
    ),
    "joint_fisher": lambda: JointFisherLoss(num_particles=2, vectorize_particles=True),
    "m2_kl": lambda: M2Loss(inference="kl", num_particles=2, vectorize_particles=True),
    "m3_kl": lambda: M3Loss(inference="kl", num_particles=2),
    "beta_elbo": lambda: BetaELBO(beta=0.5, anneal_steps=50),
    "lagging": lambda: LaggingInferenceELBO(inner_window=5, max_inner_steps=20),
    "libi": lambda: LiBILoss(likelihood_steps=150, inference_steps=149, num_rounds=1),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_plain_pyro_vae_trains(name):
    torch.manual_seed(0)
    x = torch.randn(256, 2) @ torch.tensor([[1.0, 0.8], [0.0, 0.3]])
    vae = VAE()
    loss = LOSSES[name]()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), loss=loss)
    pyro.set_rng_seed(1)
    before = loss.loss(vae.model, vae.guide, x)
    values = [svi.step(x) for _ in range(300)]
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    if name == "libi":  # its objective changes with the phase: each phase improves its own
        assert values[149] < 0.1 * values[0] and values[298] < 0.2 * values[150]
        return
    pyro.set_rng_seed(1)
    after = loss.loss(vae.model, vae.guide, x)
    assert after < before - 10, (before, after)  # each loss improves its own objective
    if name in ("trace_elbo", "m1_kl", "m1_fisher", "m1_fisher_reparam", "joint_fisher"):
        # and these improve the model's score-matching fit of this data
        m1 = M1Loss(num_particles=8, vectorize_particles=True)
        assert m1.loss(vae.model, vae.guide, x) < -300


class EnergyPriorVAE(VAE):
    """The same VAE with an energy-based prior e^{-E(z)} registered with ``pyro.module``."""

    def __init__(self):
        super().__init__()
        self.energy = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def log_prior(self, z):
        return -self.energy(z).squeeze(-1) - 0.5 * z.pow(2).sum(-1)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        pyro.module("energy", self.energy)
        log_sigma = pyro.param("log_sigma", torch.tensor(0.0))
        prior = EnergyDistribution(lambda z: -self.log_prior(z), event_shape=(2,))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", prior)
            pyro.sample("obs", dist.Normal(self.decoder(z), log_sigma.exp()).to_event(1), obs=x)


ENERGY_LOSSES = {
    "ssm_prior": lambda: SSMPriorLoss(),
    "adversarial_prior": lambda: AdversarialPriorLoss(GaussianVariationalPrior(2)),
    "iw_prior": lambda: ImportanceWeightedPriorLoss(num_samples=4, vectorize_particles=True),
}


@pytest.mark.parametrize("name", sorted(ENERGY_LOSSES))
def test_plain_pyro_energy_prior_vae_trains(name):
    torch.manual_seed(0)
    x = torch.randn(256, 2) @ torch.tensor([[1.0, 0.8], [0.0, 0.3]])
    vae = EnergyPriorVAE()
    energy = [p.detach().clone() for p in vae.energy.parameters()]
    loss = ENERGY_LOSSES[name]()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), loss=loss)
    pyro.set_rng_seed(1)
    before = loss.loss(vae.model, vae.guide, x)
    for _ in range(200):
        svi.step(x)
    pyro.set_rng_seed(1)
    # the loss's own objective improves ...
    assert loss.loss(vae.model, vae.guide, x) < before - 100
    # ... and the energy, registered with pyro.module, is trained
    assert any(not torch.equal(a, b) for a, b in zip(energy, vae.energy.parameters(), strict=True))
