"""Plain torch networks used by the ready-made models and guides.

Every network maps inputs with arbitrary leading (particle and batch) dimensions, so the models work
with vectorized particles.
"""

import pyro
import torch
from torch import nn


def mlp(in_dim, hidden, out_dim, activation=nn.Softplus):
    """A fully connected network ``in_dim → hidden... → out_dim`` with ``activation`` between."""
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ConvDecoder(nn.Module):
    """DCGAN-style decoder: ``(..., latent_dim)`` → ``(..., channels, 32, 32)`` means."""

    def __init__(self, latent_dim, channels=1, width=64):
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent_dim, 4 * width * 4 * 4)
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1),  # 8x8
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # 16x16
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),  # 32x32
        )

    def forward(self, z):
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 4 * self.width, 4, 4)
        out = self.net(h)
        return out.reshape(lead + out.shape[1:])


class ConvEncoder(nn.Module):
    """DCGAN-style encoder: ``(..., channels, 32, 32)`` → ``(..., out_dim)`` features."""

    def __init__(self, out_dim, channels=1, width=64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),  # 16x16
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # 8x8
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1),  # 4x4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * width * 4 * 4, out_dim),
        )

    def forward(self, x):
        lead = x.shape[:-3]
        out = self.net(x.reshape((-1,) + x.shape[-3:]))
        return out.reshape(lead + out.shape[-1:])


def data_plate(x, num_data=None, name="data"):
    """The plate over the rows of ``x``; ``num_data`` > ``len(x)`` marks ``x`` as a minibatch.

    With ``num_data`` the plate has full size ``num_data`` and subsample ``arange(len(x))``, so every
    log-density is scaled by ``num_data / len(x)`` as for Pyro's plate subsampling.
    """
    n = x.shape[0]
    if num_data is None or num_data == n:
        return pyro.plate(name, n)
    return pyro.plate(name, num_data, subsample=torch.arange(n, device=x.device))
