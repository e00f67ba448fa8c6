"""Amortized guides."""

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch.nn.functional import softplus

from ..models.networks import ConvEncoder, data_plate, mlp


class DiagonalNormalEncoder(PyroModule):
    """Amortized diagonal Gaussian guide :math:`q_\\phi(z|x) = \\mathcal{N}(\\mu_\\phi(x), \\operatorname{diag}\\sigma^2_\\phi(x))`.

    Call it with the model's arguments, ``guide(x, num_data=None)``; it samples site ``"z"`` inside
    plate ``"data"``. Reparametrised, so it serves every loss here and ``Trace_ELBO``.

    :param torch.nn.Module encoder: maps ``(...,) + obs_shape`` to ``(..., 2 * latent_dim)``: the
        first half is the mean, the second passes through softplus (plus ``min_scale``) to give the
        standard deviation.
    :param int latent_dim: dimension of ``z``.
    :param float min_scale: lower bound on the standard deviation.
    """

    def __init__(self, encoder, latent_dim, min_scale=1e-4):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)
        to_pyro_module_(encoder)
        self.encoder = encoder

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(30, 30), **kwargs):
        return cls(mlp(data_dim, hidden, 2 * latent_dim), latent_dim, **kwargs)

    @classmethod
    def conv(cls, latent_dim, channels=1, width=64, image_size=32, **kwargs):
        """An encoder for ``channels × image_size × image_size`` images
        (:class:`~pyro_vsm.models.ConvEncoder`)."""
        return cls(ConvEncoder(2 * latent_dim, channels, width, image_size), latent_dim, **kwargs)

    def distribution(self, x):
        """The guide's distribution ``q(z|x)`` for a batch ``x`` (batch shape ``x.shape[:1]``)."""
        out = self.encoder(x)
        loc, raw = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return dist.Normal(loc, softplus(raw) + self.min_scale).to_event(1)

    def forward(self, x, num_data=None):
        with data_plate(x, num_data):
            return pyro.sample("z", self.distribution(x))
