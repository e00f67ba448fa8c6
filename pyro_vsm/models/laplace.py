r"""A VAE with a calibrated Laplace decoder ("decoder calibration", Rybkin et al., 2021), the
observation model of the CIFAR-10 experiment of "Variational inference with unnormalized priors"
(Section 4.3: "the scale of the distribution is computed analytically using the L1 loss")."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from .._checks import check_positive, positive_int
from .networks import data_plate

__all__ = ["LaplaceVAE", "calibrated_laplace_scale"]


def calibrated_laplace_scale(x, loc):
    r"""The maximum-likelihood scale of a Laplace likelihood with one global scale: the mean
    absolute residual,

    .. math::

        \hat b = \arg\max_b \sum_{i=1}^n \log\mathrm{Laplace}(x_i; \mu_i, b)
               = \arg\max_b \Big(-n\log 2b - \tfrac1b\sum_i |x_i - \mu_i|\Big)
               = \frac1n\sum_{i=1}^n |x_i - \mu_i|,

    over every element of ``x - loc`` (broadcast), detached. A scalar tensor.

    :param torch.Tensor x: observations.
    :param torch.Tensor loc: decoder means, broadcastable with ``x``.
    """
    return (x - loc).abs().mean().detach()


class LaplaceVAE(PyroModule):
    r"""A VAE with a standard normal prior and a Laplace decoder with one calibrated scale:

    .. math::

        z \sim \mathcal N(0, I), \qquad x_j | z \sim \mathrm{Laplace}(g_\theta(z)_j, b),

    where :math:`b` is not learned by gradients but set analytically ("decoder calibration").
    In training mode (``model.train()``, the default) every call sets :math:`b` to the mean
    absolute residual :math:`\frac1n\sum|x - g_\theta(z)|` of the current batch (all particles,
    points and pixels; detached, see :func:`calibrated_laplace_scale`), the maximiser of the
    likelihood for the current decoder, and stores it in the buffer ``scale``. In evaluation mode
    (``model.eval()``) the stored scale is used, so a test NLL never uses the test residual; call
    :meth:`fit_scale` on the training data before evaluating to use the scale of the whole training
    set rather than that of the last batch.

    Call it as ``model(x, num_data=None)``; sites ``"z"`` (latent), ``"x"`` (observed) inside
    plate ``"data"``, as :class:`~pyro_vsm.models.GaussianVAE`.

    :param torch.nn.Module decoder: maps ``(..., latent_dim)`` to ``(...,) + obs_shape`` means.
    :param int latent_dim: dimension of ``z``.
    :param tuple obs_shape: shape of one observation.
    :param float min_scale: lower bound of the scale (a batch reconstructed exactly would give 0).

    References:

    [1] `Simple and Effective VAE Training with Calibrated Decoders`,
        Oleh Rybkin, Kostas Daniilidis, Sergey Levine (2021)

    [2] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)
    """

    def __init__(self, decoder, latent_dim, obs_shape, min_scale=1e-3):
        super().__init__()
        if not isinstance(decoder, torch.nn.Module):
            raise ValueError(f"decoder must be a torch.nn.Module, got {type(decoder).__name__}")
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.obs_shape = tuple(obs_shape)
        self.min_scale = check_positive(min_scale, "min_scale")
        to_pyro_module_(decoder)
        self.decoder = decoder
        self.register_buffer("scale", torch.ones(()))

    def likelihood(self, z, x):
        r"""The Laplace observation distribution :math:`p(x|z)` (calibrating the scale on ``x``
        in training mode).

        :param torch.Tensor z: latents ``(..., latent_dim)``.
        :param torch.Tensor x: observations ``(N,) + obs_shape``.
        """
        loc = self.decoder(z)
        if self.training:
            scale = calibrated_laplace_scale(x, loc).clamp_min(self.min_scale)
            with torch.no_grad():
                self.scale.copy_(scale)
        else:
            scale = self.scale.to(loc)
        return dist.Laplace(loc, scale.expand(loc.shape)).to_event(len(self.obs_shape))

    @torch.no_grad()
    def fit_scale(self, x, guide, batch_size=1024):
        r"""Sets the stored scale to the mean absolute residual over the data ``x`` (one draw
        :math:`z \sim q(z|x)` per point) and returns it.

        :param torch.Tensor x: training data ``(N,) + obs_shape``.
        :param guide: a guide called as ``guide(x)`` that samples site ``"z"``.
        :param int batch_size: points per guide call.
        """
        batch_size = positive_int(batch_size, "batch_size")
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            z = poutine.trace(guide).get_trace(xb).nodes["z"]["value"]
            total = total + (xb - self.decoder(z)).abs().sum()
        scale = (total / x.numel()).clamp_min(self.min_scale)
        self.scale.copy_(scale)
        return scale

    def forward(self, x, num_data=None):
        r"""Samples ``"z"`` from the prior and observes ``x`` at site ``"x"``.

        :param torch.Tensor x: a batch ``(N,) + obs_shape``.
        :param int num_data: size of the whole data set when ``x`` is a minibatch.
        """
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1))
            return pyro.sample("x", self.likelihood(z, x), obs=x)
