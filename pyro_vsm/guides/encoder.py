r"""Amortized guides."""

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch.nn.functional import softplus

from .._checks import check_positive
from ..models.networks import ConvEncoder, data_plate, mlp


class DiagonalNormalEncoder(PyroModule):
    r"""Amortized diagonal Gaussian guide
    :math:`q_\phi(z|x) = \mathcal{N}(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x))`.

    Call it with the model's arguments, ``guide(x, num_data=None)``; it samples site ``"z"`` inside
    plate ``"data"``. Reparametrised, so it serves every loss here and ``Trace_ELBO``.

    With ``fixed_scale=σ`` the standard deviation is not learned, :math:`q_\phi(z|x) =
    \mathcal{N}(\mu_\phi(x), \sigma^2 I)`, and only the mean is read from the encoder: the ECVAE of
    "Variational inference with unnormalized priors" (Section 4.1) uses :math:`\sigma = 1`.

    :param torch.nn.Module encoder: maps ``(...,) + obs_shape`` to ``(..., 2 * latent_dim)``: the
        first half is the mean, the second passes through softplus (plus ``min_scale``) to give the
        standard deviation. With ``fixed_scale`` only the first ``latent_dim`` outputs (the mean)
        are used, so an encoder with ``latent_dim`` outputs suffices.
    :param int latent_dim: dimension of ``z``.
    :param float min_scale: lower bound on the standard deviation.
    :param float fixed_scale: a fixed posterior standard deviation, or ``None`` to learn it.

    References:

    [1] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)
    """

    def __init__(self, encoder, latent_dim, min_scale=1e-4, fixed_scale=None):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)
        self.fixed_scale = check_positive(fixed_scale, "fixed_scale", allow_none=True)
        to_pyro_module_(encoder)
        self.encoder = encoder

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(30, 30), **kwargs):
        r"""The guide with an MLP encoder (:func:`~pyro_vsm.models.networks.mlp`) for flat data.

        :param int data_dim: dimension of ``x``.
        :param int latent_dim: dimension of ``z``.
        :param hidden: widths of the hidden layers.
        :param kwargs: further arguments of the class (``min_scale``).
        """
        return cls(mlp(data_dim, hidden, 2 * latent_dim), latent_dim, **kwargs)

    @classmethod
    def conv(cls, latent_dim, channels=1, width=64, image_size=32, **kwargs):
        r"""The guide with a convolutional encoder
        (:class:`~pyro_vsm.models.networks.ConvEncoder`) for
        ``channels × image_size × image_size`` images.

        :param int latent_dim: dimension of ``z``.
        :param int channels: image channels.
        :param int width: width of the convolutional layers (see
            :class:`~pyro_vsm.models.networks.ConvEncoder`).
        :param int image_size: the image side (8, 28, 32, ...).
        :param kwargs: further arguments of the class (``min_scale``).
        """
        return cls(ConvEncoder(2 * latent_dim, channels, width, image_size), latent_dim, **kwargs)

    def distribution(self, x):
        r"""The guide's distribution ``q(z|x)`` for a batch ``x`` (batch shape ``x.shape[:1]``).

        :param torch.Tensor x: a batch of data.
        """
        out = self.encoder(x)
        if self.fixed_scale is not None:
            return dist.Normal(out[..., : self.latent_dim], self.fixed_scale).to_event(1)
        loc, raw = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return dist.Normal(loc, softplus(raw) + self.min_scale).to_event(1)

    def forward(self, x, num_data=None):
        r"""Samples site ``"z"`` inside plate ``"data"``.

        :param torch.Tensor x: a batch of data (the model's argument).
        :param int num_data: the size of the whole data set when ``x`` is a minibatch (scales the
            plate); ``None`` for the full data.
        """
        with data_plate(x, num_data):
            return pyro.sample("z", self.distribution(x))
