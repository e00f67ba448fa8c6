r"""Block Gibbs sampling of a Gaussian–Bernoulli RBM as a kernel.

One transition draws the hidden units :math:`h \sim p(h|z)` (independent Bernoullis) and then the
visible units exactly, :math:`z \sim p(z|h) = \mathcal N(\mu + Wh, \operatorname{diag}\sigma^2)`.

References:

[1] `Gaussian-Bernoulli RBMs without tears`,
    Renjie Liao, Simon Kornblith, Mengye Ren, David J. Fleet, Geoffrey Hinton (2022)
"""

import torch

from .._checks import positive_int
from ._common import check_z0

__all__ = ["block_gibbs", "block_gibbs_kernel", "check_grbm"]


def check_grbm(grbm, z0):
    r"""``z0`` detached, after checking that ``grbm`` is a GRBM with ``z0``'s visible size.

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z0: visible states ``(..., d)``.
    :returns: ``z0`` detached.
    """
    for attr in ("sample_hidden", "sample_visible", "visible_mean", "variance", "num_visible"):
        if not hasattr(grbm, attr):
            raise ValueError(
                f"grbm must be a GRBMEnergy (or provide {attr}), got {type(grbm).__name__}"
            )
    z = check_z0(z0)
    if z.shape[-1] != grbm.num_visible:
        raise ValueError(f"z0 must have shape (..., {grbm.num_visible}), got {tuple(z.shape)}")
    return z


def block_gibbs_kernel(grbm, z, generator=None):
    r"""One sweep :math:`h \sim p(h|z)`, :math:`z' \sim p(z'|h)`.

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z: visible states ``(..., d)``.
    :param torch.Generator generator: optional source of the draws.
    :returns: ``(z', h)``.
    """
    with torch.no_grad():
        h = grbm.sample_hidden(z, generator)
        return grbm.sample_visible(h, generator), h


def block_gibbs(grbm, z0, num_steps, generator=None, return_hidden=False):
    r"""``num_steps`` block Gibbs sweeps of a GRBM from ``z0``.

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z0: initial visible states ``(..., d)``.
    :param int num_steps: number of :math:`(h, z)` sweeps.
    :param torch.Generator generator: optional source of the draws.
    :param bool return_hidden: also return the hidden state that generated the last ``z``.
    :returns: ``z`` (detached), or ``(z, h)``.
    """
    z = check_grbm(grbm, z0)
    num_steps = positive_int(num_steps, "num_steps")
    for _ in range(num_steps):
        z, h = block_gibbs_kernel(grbm, z, generator)
    return (z, h) if return_hidden else z
