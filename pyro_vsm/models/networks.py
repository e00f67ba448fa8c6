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


def _upsamplings(image_size):
    r"""``(k, base)``: ``k`` stride-2 (de)convolutions between a ``base × base`` feature map and an
    ``image_size × image_size`` image (``image_size = base · 2^k``): three from 4×4 for 32×32 (the
    DCGAN layout), two from 2×2 for 8×8 and from 7×7 for 28×28."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    k = 3 if image_size % 8 == 0 and image_size >= 32 else 2
    base = image_size // 2**k
    if base * 2**k != image_size:
        raise ValueError(
            f"image_size must be 4·2^k (k >= 1) or a multiple of 4 such as 8, 28 or 32, got "
            f"{image_size}"
        )
    return k, base


class ConvDecoder(nn.Module):
    r"""DCGAN-style decoder: ``(..., latent_dim)`` → ``(..., channels, image_size, image_size)``
    means.

    A linear layer to a ``base × base`` map with ``width · 2^(k-1)`` channels, then ``k``
    transposed convolutions (kernel 4, stride 2), halving the channels and doubling the size each
    time, ReLU between: ``k = 3`` from 4×4 for 32×32 images (the paper's DCGAN layout), ``k = 2``
    from 2×2 for 8×8 images (scikit-learn's digits) and from 7×7 for 28×28 images.

    :param int latent_dim: dimension of the input.
    :param int channels: image channels.
    :param int width: channels of the last hidden map.
    :param int image_size: side of the square image (8, 28, 32, ...).
    """

    def __init__(self, latent_dim, channels=1, width=64, image_size=32):
        super().__init__()
        k, base = _upsamplings(image_size)
        self.width, self.base, self.top = width, base, width * 2 ** (k - 1)
        self.fc = nn.Linear(latent_dim, self.top * base * base)
        layers, c = [], self.top
        for i in range(k):
            out = channels if i == k - 1 else c // 2
            layers += [nn.ReLU(), nn.ConvTranspose2d(c, out, 4, stride=2, padding=1)]
            c = out
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, self.top, self.base, self.base)
        out = self.net(h)
        return out.reshape(lead + out.shape[1:])


class ConvEncoder(nn.Module):
    r"""DCGAN-style encoder: ``(..., channels, image_size, image_size)`` → ``(..., out_dim)``.

    ``k`` convolutions (kernel 4, stride 2; ``width``, ``2·width``, ... channels, ReLU after each)
    down to a ``base × base`` map, then a linear layer; ``k`` and ``base`` as for
    :class:`ConvDecoder` (32×32: three convolutions to 4×4; 8×8: two to 2×2).

    :param int out_dim: dimension of the output.
    :param int channels: image channels.
    :param int width: channels of the first convolution.
    :param int image_size: side of the square image (8, 28, 32, ...).
    """

    def __init__(self, out_dim, channels=1, width=64, image_size=32):
        super().__init__()
        k, base = _upsamplings(image_size)
        layers, c = [], channels
        for i in range(k):
            out = width * 2**i
            layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
            c = out
        layers += [nn.Flatten(), nn.Linear(c * base * base, out_dim)]
        self.net = nn.Sequential(*layers)

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
