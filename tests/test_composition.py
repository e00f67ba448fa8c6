"""A VAE written in plain Pyro style (as Pyro's VAE tutorial) trains with every loss."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyro_vsm import JointFisherLoss, M1Loss


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
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_plain_pyro_vae_trains(name):
    torch.manual_seed(0)
    x = torch.randn(256, 2) @ torch.tensor([[1.0, 0.8], [0.0, 0.3]])
    vae = VAE()
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-2}), loss=LOSSES[name]())
    m1 = M1Loss(num_particles=8, vectorize_particles=True)
    before = m1.loss(vae.model, vae.guide, x)
    for _ in range(300):
        svi.step(x)
    after = m1.loss(vae.model, vae.guide, x)
    # every objective improves the model's score-matching fit of this data
    assert after < before - 100, (before, after)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
