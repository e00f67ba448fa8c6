r"""An amortized factorised Bernoulli guide, relaxed for training."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from .._checks import check_positive
from ..distributions.relaxed import LogitRelaxedBernoulli
from ..models.networks import ConvEncoder, data_plate, mlp

__all__ = ["BernoulliEncoder"]


class BernoulliEncoder(PyroModule):
    r"""Amortized factorised Bernoulli guide :math:`q_\phi(z|x) = \prod_i
    \operatorname{Bernoulli}(z_i; \operatorname{sigmoid}\ell_{\phi,i}(x))`, the partner of
    :class:`~pyro_vsm.models.BinaryLatentVAE`.

    With ``relaxed=True`` (training) site ``"z"`` is the logit of the relaxed variable,
    :class:`~pyro_vsm.distributions.LogitRelaxedBernoulli` with temperature :math:`\tau` and logits
    :math:`\ell_\phi(x)` (Gumbel-softmax: reparametrised, so KL inference and ``Trace_ELBO``
    apply); with ``relaxed=False`` (evaluation) it is the discrete Bernoulli, whose mean
    :math:`\operatorname{sigmoid}\ell_\phi(x)` is the posterior mean. Switch the model's and the
    guide's :attr:`relaxed` together.

    :param torch.nn.Module encoder: maps ``(...,) + obs_shape`` to ``(..., latent_dim)`` logits.
    :param int latent_dim: dimension of ``z``.
    :param float temperature: :math:`\tau > 0`.

    References:

    [1] `Categorical Reparameterization with Gumbel-Softmax`,
        Eric Jang, Shixiang Gu, Ben Poole (2017)
    """

    def __init__(self, encoder, latent_dim, temperature=0.5):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.temperature = check_positive(temperature, "temperature")
        self.relaxed = True
        to_pyro_module_(encoder)
        self.encoder = encoder

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(30, 30), **kwargs):
        r"""A guide with a fully connected encoder."""
        return cls(mlp(data_dim, hidden, latent_dim), latent_dim, **kwargs)

    @classmethod
    def conv(cls, latent_dim, channels=1, width=64, image_size=32, **kwargs):
        r"""A guide for square images with a DCGAN-style encoder."""
        return cls(ConvEncoder(latent_dim, channels, width, image_size), latent_dim, **kwargs)

    def distribution(self, x):
        r""":math:`q(z|x)` in the current mode (batch shape ``x.shape[:1]``)."""
        logits = self.encoder(x)
        if self.relaxed:
            tau = torch.tensor(self.temperature, dtype=logits.dtype, device=logits.device)
            return LogitRelaxedBernoulli(tau, logits=logits).to_event(1)
        return dist.Bernoulli(logits=logits).to_event(1)

    def forward(self, x, num_data=None):
        with data_plate(x, num_data):
            return pyro.sample("z", self.distribution(x))
