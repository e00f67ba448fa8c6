"""Gaussian VAEs as Pyro models."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from torch.distributions import constraints

from .networks import ConvDecoder, data_plate, mlp


class GaussianVAE(PyroModule):
    """The Gaussian VAE of eq. (3) in Wenliang (2022):

    .. math::

        p(z) = \\mathcal{N}(0, I), \\qquad p_\\theta(x|z) = \\mathcal{N}(x; g_\\theta(z), \\gamma),

    with ``γ`` a learnable scalar (``gamma="scalar"``), a learnable variance per data dimension
    (``gamma="diagonal"``) or a fixed positive number.

    Call it as ``model(x, num_data=None)``; ``x`` has shape ``(N,) + obs_shape``. Passing
    ``num_data`` marks ``x`` as a minibatch of a data set of that size (the plate is scaled). The
    latent site is ``"z"``, the observed site ``"x"`` and the plate ``"data"``: pair it with a guide
    using the same names, e.g. :class:`pyro_vsm.guides.DiagonalNormalEncoder`.

    :param torch.nn.Module decoder: maps ``(..., latent_dim)`` to ``(...,) + obs_shape`` means; it is
        converted in place to a :class:`~pyro.nn.PyroModule` so that its parameters live in Pyro's
        param store.
    :param int latent_dim: dimension of ``z``.
    :param tuple obs_shape: shape of one observation.
    :param gamma: ``"scalar"``, ``"diagonal"`` or a positive float (fixed variance).
    :param float gamma_init: initial variance when learnable.
    """

    def __init__(self, decoder, latent_dim, obs_shape, gamma="scalar", gamma_init=1.0):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.obs_shape = tuple(obs_shape)
        to_pyro_module_(decoder)
        self.decoder = decoder
        if gamma == "scalar":
            self.gamma = PyroParam(torch.tensor(float(gamma_init)), constraint=constraints.positive)
        elif gamma == "diagonal":
            self.gamma = PyroParam(
                torch.full(self.obs_shape, float(gamma_init)), constraint=constraints.positive
            )
        else:
            if not float(gamma) > 0:
                raise ValueError(
                    f"gamma must be 'scalar', 'diagonal' or a positive number, got {gamma!r}"
                )
            self.register_buffer("_fixed_gamma", torch.tensor(float(gamma)))
            self.gamma = None

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(30, 30), **kwargs):
        """A VAE with a fully connected decoder (two hidden layers of 30 units by default)."""
        return cls(mlp(latent_dim, hidden, data_dim), latent_dim, (data_dim,), **kwargs)

    @classmethod
    def conv(cls, latent_dim, channels=1, width=64, image_size=32, **kwargs):
        """A VAE for ``channels × image_size × image_size`` images (32×32 by default, 8×8 for the
        digits) with a DCGAN-style decoder (:class:`~pyro_vsm.models.ConvDecoder`)."""
        shape = (channels, image_size, image_size)
        return cls(
            ConvDecoder(latent_dim, channels, width, image_size), latent_dim, shape, **kwargs
        )

    def variance(self):
        """The observation variance ``γ`` (scalar or per dimension)."""
        return self._fixed_gamma if self.gamma is None else self.gamma

    def forward(self, x, num_data=None):
        gamma = self.variance()
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1))
            loc = self.decoder(z)
            scale = gamma.to(loc).sqrt().expand(loc.shape)
            return pyro.sample("x", dist.Normal(loc, scale).to_event(len(self.obs_shape)), obs=x)
