r"""Auto-encoding models with a hyperspherical or a Euclidean latent space.

* :class:`SphericalVAE`: :math:`z \sim \mathrm{Unif}(S^n)`, :math:`x \mid z \sim p_\theta(x \mid
  g_\theta(z\sqrt{n+1}))` (the hyperspherical VAE of Davidson et al. [1] with the latent rescaled
  to the norm of a standard Gaussian's, as in Wang et al. [2]);
* :class:`EuclideanVAE`: its counterpart :math:`z \sim \mathcal N(0, I_n)`,
  :math:`x \mid z \sim p_\theta(x \mid g_\theta(z))`.

Both follow :class:`~pyro_vsm.models.GaussianVAE`'s convention: ``model(x, num_data=None)``,
latent site ``"z"`` and observed site ``"x"`` inside plate ``"data"``, where ``num_data`` marks
``x`` as a minibatch of a data set of that size. Observations are ``"bernoulli"`` (the decoder
gives logits; the default, for binarised images) or ``"gaussian"`` (the decoder gives means,
variance ``gamma``). The same model trains with ``Trace_ELBO`` and an explicit guide
(:class:`~pyro_vsm.guides.VonMisesFisherEncoder`,
:class:`~pyro_vsm.guides.DiagonalNormalEncoder`), with :class:`~pyro_vsm.infer.ImplicitELBO` and
an implicit guide (:class:`~pyro_vsm.guides.ImplicitEncoder`), and as the decoder of a WAE
(:class:`~pyro_vsm.infer.ImplicitWAELoss`, :class:`~pyro_vsm.infer.MMDWAELoss`).

Evaluate :class:`SphericalVAE` with :func:`pyro_vsm.evaluation.importance_log_likelihood` (vMF
guides) or :func:`pyro_vsm.evaluation.ais_log_likelihood` (through the Gaussian augmentation of
:func:`pyro_vsm.evaluation.sphere_augmented`, which it applies itself).

References:

[1] `Hyperspherical Variational Auto-Encoders`,
    Tim R. Davidson, Luca Falorsi, Nicola De Cao, Thomas Kipf, Jakub M. Tomczak (2018)

[2] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .._checks import positive_int
from ..distributions.sphere import HypersphericalUniform
from .energy_prior import _Likelihood
from .networks import data_plate, mlp

__all__ = ["EuclideanVAE", "SphericalVAE"]


class _LatentVAE(_Likelihood):
    r"""The shared part: decoder, observation model, the plate and the sites."""

    #: the number of coordinates of z relative to the latent dimension n
    _extra_coordinate = 0

    def __init__(self, decoder, latent_dim, obs="bernoulli", *, obs_shape=None, gamma=1.0):
        super().__init__()
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self._init_likelihood(decoder, obs, obs_shape, gamma, 1.0)

    @property
    def coordinates(self):
        r"""The number of coordinates of ``z`` (:math:`n + 1` on :math:`S^n`, :math:`n` in
        :math:`\mathbb R^n`)."""
        return self.latent_dim + self._extra_coordinate

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(256, 256), activation=nn.Tanh, **kwargs):
        r"""The model with a fully connected decoder (the reference code's: two hidden layers of
        256 units with tanh).

        :param int data_dim: dimension of ``x``.
        :param int latent_dim: :math:`n`.
        :param hidden: widths of the hidden layers.
        :param activation: the activation class.
        :param kwargs: further arguments of the class (``obs``, ``gamma``...).
        """
        coordinates = positive_int(latent_dim, "latent_dim") + cls._extra_coordinate
        return cls(mlp(coordinates, hidden, data_dim, activation), latent_dim, **kwargs)

    def prior(self, like):
        r"""The prior :math:`p(z)`, with ``like``'s dtype and device.

        :param torch.Tensor like: gives dtype and device.
        """
        raise NotImplementedError

    def decoder_input(self, z):
        r"""What the decoder sees for the latent ``z``.

        :param torch.Tensor z: latent values.
        """
        return z

    def likelihood(self, z, event_dim):
        r""":math:`p(x|z)` for latents ``z`` (``event_dim`` = number of observation dims).

        :param torch.Tensor z: latent values.
        :param int event_dim: the number of dims of one observation.
        """
        return super().likelihood(self.decoder_input(z), event_dim)

    def decode(self, z):
        r"""The mean of :math:`p(x|z)` (probabilities for Bernoulli observations).

        :param torch.Tensor z: latent values.
        """
        return super().decode(self.decoder_input(z))

    def generate(self, num_samples, like):
        r"""``(z, mean of p(x|z))`` for ``num_samples`` draws :math:`z \sim p(z)`.

        :param int num_samples: the number of draws.
        :param torch.Tensor like: gives dtype and device.
        """
        num_samples = positive_int(num_samples, "num_samples")
        z = self.prior(like).sample((num_samples,))
        return z, self.decode(z)

    def forward(self, x, num_data=None):
        r"""Samples ``"z"`` from the prior and observes ``x`` at ``"x"`` inside plate ``"data"``.

        :param torch.Tensor x: a batch of data, shape ``(N,) + obs_shape``.
        :param int num_data: the size of the whole data set when ``x`` is a minibatch.
        """
        with data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            return self._observe(z, x)


class SphericalVAE(_LatentVAE):
    r"""A VAE with the uniform prior on :math:`S^n` (see the module docstring):

    .. math::

        z \sim \mathrm{Unif}(S^n), \qquad x \mid z \sim
        \operatorname{Bernoulli}(\operatorname{sigmoid} g_\theta(z\sqrt{n+1}))
        \ \text{or}\ \mathcal N(g_\theta(z\sqrt{n+1}), \gamma).

    The site ``"z"`` is a :class:`~pyro_vsm.distributions.HypersphericalUniform` with
    :math:`n + 1` coordinates.

    :param torch.nn.Module decoder: maps ``(..., n + 1)`` to ``(...,) + obs_shape`` logits or
        means; converted in place to a :class:`~pyro.nn.PyroModule`.
    :param int latent_dim: :math:`n`, the sphere's dimension.
    :param str obs: ``"bernoulli"`` or ``"gaussian"``.
    :param tuple obs_shape: shape of one observation (needed only for ``gamma="diagonal"``).
    :param gamma: Gaussian variance: ``"scalar"``, ``"diagonal"`` or a fixed positive number.
    :param bool rescale: feed :math:`z\sqrt{n+1}` to the decoder (``False``: :math:`z`, as in
        Davidson et al.).
    """

    _extra_coordinate = 1

    def __init__(
        self, decoder, latent_dim, obs="bernoulli", *, obs_shape=None, gamma=1.0, rescale=True
    ):
        if not isinstance(rescale, bool):
            raise ValueError(f"rescale must be True or False, got {rescale!r}")
        super().__init__(decoder, latent_dim, obs, obs_shape=obs_shape, gamma=gamma)
        self.rescale = rescale

    def prior(self, like):
        return HypersphericalUniform(self.latent_dim, dtype=like.dtype, device=like.device)

    def decoder_input(self, z):
        return z * math.sqrt(self.coordinates) if self.rescale else z


class EuclideanVAE(_LatentVAE):
    r"""A VAE with the standard Gaussian prior on :math:`\mathbb R^n` (see the module docstring):

    .. math::

        z \sim \mathcal N(0, I_n), \qquad x \mid z \sim
        \operatorname{Bernoulli}(\operatorname{sigmoid} g_\theta(z))
        \ \text{or}\ \mathcal N(g_\theta(z), \gamma).

    :param torch.nn.Module decoder: maps ``(..., n)`` to ``(...,) + obs_shape`` logits or means;
        converted in place to a :class:`~pyro.nn.PyroModule`.
    :param int latent_dim: :math:`n`.
    :param str obs: ``"bernoulli"`` or ``"gaussian"``.
    :param tuple obs_shape: shape of one observation (needed only for ``gamma="diagonal"``).
    :param gamma: Gaussian variance: ``"scalar"``, ``"diagonal"`` or a fixed positive number.
    """

    def prior(self, like):
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        return dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1)
