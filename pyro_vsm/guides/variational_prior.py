r"""Variational priors :math:`q_\zeta(z)` with tractable densities: the adversaries of
:class:`~pyro_vsm.infer.adversarial_prior.AdversarialPriorLoss`, which bound the log-partition
function of an energy-based prior from below."""

import math

import torch
from torch import nn

from .._checks import positive_int

__all__ = ["GaussianVariationalPrior", "draw_with_log_prob", "iaf_prior"]


class GaussianVariationalPrior(nn.Module):
    r"""A learnable full-covariance Gaussian :math:`q_\zeta(z) = \mathcal N(\mu, LL^\top)`: the
    simplest variational prior for :class:`~pyro_vsm.infer.adversarial_prior.AdversarialPriorLoss`
    (no extra dependency), with the
    interface any variational prior must have: ``rsample(sample_shape)``, ``log_prob(z)`` and
    ``event_shape``. Far less expressive than a flow (:func:`iaf_prior`).

    :param int dim: dimension of ``z``.
    :param float init_scale: initial standard deviation.
    :param torch.dtype dtype: dtype of the parameters (default: torch's default dtype).
    :param torch.device device: device of the parameters.
    """

    def __init__(self, dim, init_scale=1.0, *, dtype=None, device=None):
        super().__init__()
        self.dim = positive_int(dim, "dim")
        kw = dict(dtype=dtype, device=device)
        self.loc = nn.Parameter(torch.zeros(self.dim, **kw))
        self.raw_tril = nn.Parameter(torch.zeros(self.dim, self.dim, **kw))
        self.log_diag = nn.Parameter(torch.full((self.dim,), math.log(float(init_scale)), **kw))
        self.event_shape = torch.Size([self.dim])

    def distribution(self):
        r"""The distribution :math:`\mathcal N(\mu, LL^\top)` at the current parameters."""
        tril = torch.tril(self.raw_tril, -1) + torch.diag_embed(self.log_diag.exp())
        return torch.distributions.MultivariateNormal(self.loc, scale_tril=tril)

    def rsample(self, sample_shape=()):
        r"""Reparametrised draws, shape ``sample_shape + (dim,)``.

        :param sample_shape: the shape of the batch of draws.
        """
        return self.distribution().rsample(torch.Size(sample_shape))

    def log_prob(self, z):
        r""":math:`\log q_\zeta(z)`, shape ``z.shape[:-1]``.

        :param torch.Tensor z: points, shape ``(..., dim)``.
        """
        return self.distribution().log_prob(z)


def iaf_prior(dim, transforms=4, hidden_features=(64, 64), **kwargs):
    r"""An inverse autoregressive flow :math:`q_\zeta(z)` (Kingma et al. [1]), the adversary of the
    MNIST experiment of "Variational Inference with Unnormalized Priors", built with `zuko
    <https://zuko.readthedocs.io>`_ (the ``[flows]`` extra): a zuko ``MAF`` whose transform is
    inverted, so that sampling (with the log-density of the sample) takes one pass and only
    evaluating the log-density of an arbitrary point is sequential. Returns a zuko ``Flow``
    (``flow()`` is the distribution).

    :param int dim: dimension of ``z``.
    :param int transforms: number of autoregressive layers.
    :param hidden_features: widths of each layer's masked MLP.
    :param kwargs: passed to ``zuko.flows.MAF``.
    :raises ImportError: when zuko is not installed.

    References:

    [1] `Improved Variational Inference with Inverse Autoregressive Flow`,
        Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya Sutskever, Max Welling
        (2016)
    """
    try:
        import zuko
    except ImportError:
        raise ImportError(
            "iaf_prior needs zuko: pip install 'pyro-vsm[flows]' (or pass any module with "
            "rsample/log_prob, e.g. pyro_vsm.guides.GaussianVariationalPrior)"
        ) from None
    maf = zuko.flows.MAF(
        positive_int(dim, "dim"),
        transforms=positive_int(transforms, "transforms"),
        hidden_features=tuple(hidden_features),
        **kwargs,
    )
    return zuko.flows.Flow(maf.transform.inv, maf.base)


def draw_with_log_prob(prior, shape):
    r"""``(z, log q(z))`` with ``z`` reparametrised, from a variational prior module.

    :param prior: a module with ``rsample``/``log_prob``, or a zuko flow.
    :param shape: the sample shape.
    :raises ValueError: when the prior cannot draw reparametrised samples.
    """
    if callable(getattr(prior, "rsample", None)) and callable(getattr(prior, "log_prob", None)):
        d = prior
    else:
        d = prior()  # a zuko LazyDistribution: forward() is the distribution
    if callable(getattr(d, "rsample_and_log_prob", None)):
        from pyro.contrib.zuko import ZukoToPyro

        d = ZukoToPyro(d)  # draws with rsample_and_log_prob and caches the log-density
        z = d(shape)
        return z, d.log_prob(z)
    if not getattr(d, "has_rsample", True):
        raise ValueError("AdversarialPriorLoss: the variational prior must be reparametrisable")
    z = d.rsample(shape)
    return z, d.log_prob(z)
