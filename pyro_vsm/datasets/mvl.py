r"""The 2-D data sets of *A Wasserstein minimum velocity approach to learning unnormalized
models* (Wang et al. 2020, Section 6.1.1 and Appendix E.1.2), taken there from Wenliang et al.
(2019), at the papers' scale (not rescaled to unit variance like the standard sets):

* ``mvl-banana`` -- :math:`x_0 \sim \mathcal N(0, 1)`, :math:`x_1 \mid x_0 \sim
  \mathcal N(x_0^2 - 1, 1)` (mean 0, :math:`\operatorname{Var} x_1 = 3`). Not the built-in
  ``banana`` set, which is :math:`x_1 = \tfrac12 x_0^2 - 1 + \tfrac12\mathcal N(0, 1)`.
* ``cosine`` -- :math:`x_0 \sim \mathcal U(-4, 4)`, :math:`x_1 \mid x_0 \sim
  \mathcal N(3\cos 2x_0, 1)` (:math:`\operatorname{Var} x_0 = 16/3`, :math:`\operatorname{Var}
  x_1 \approx 5.5`).

Both have closed-form log-densities (:func:`mvl_log_prob`), so held-out log-likelihoods and
Fisher divergences of a fitted model can be compared with the truth. They are registered in
:data:`~pyro_vsm.datasets.DATASETS_2D` and drawn like the other sets
(``numpy.random.default_rng(seed)`` in float64, converted once).

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
[2] `Learning Deep Kernels for Exponential Family Densities`,
    Li Wenliang, Danica J. Sutherland, Heiko Strathmann, Arthur Gretton (2019)
"""

import math

import numpy as np
import torch

__all__ = ["MVL_DATASETS_2D", "mvl_log_prob"]

#: Half-width of the support of ``x_0`` in ``cosine``.
COSINE_HALF_WIDTH = 4.0


def _mvl_banana(rng, n):
    x0 = rng.normal(size=n)
    x1 = x0**2 - 1.0 + rng.normal(size=n)
    return np.stack([x0, x1], -1)


def _cosine(rng, n):
    x0 = rng.uniform(-COSINE_HALF_WIDTH, COSINE_HALF_WIDTH, size=n)
    x1 = 3.0 * np.cos(2.0 * x0) + rng.normal(size=n)
    return np.stack([x0, x1], -1)


#: The data sets of Wang et al. (2020), by name.
MVL_DATASETS_2D = {"mvl-banana": _mvl_banana, "cosine": _cosine}


def mvl_log_prob(name, x):
    r"""The normalised log-density of ``mvl-banana`` or ``cosine`` at ``x`` ``[..., 2]``
    (differentiable; ``-inf`` outside the support of ``cosine``).

    :param str name: ``"mvl-banana"`` or ``"cosine"``.
    :param torch.Tensor x: points ``[..., 2]``.
    """
    if name not in MVL_DATASETS_2D:
        raise ValueError(f"name must be one of {sorted(MVL_DATASETS_2D)}, got {name!r}")
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[-1] != 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape [..., 2]")
    x0, x1 = x[..., 0], x[..., 1]
    log_norm = -0.5 * math.log(2 * math.pi)
    if name == "mvl-banana":
        return 2 * log_norm - 0.5 * x0**2 - 0.5 * (x1 - x0**2 + 1) ** 2
    inside = x0.abs() <= COSINE_HALF_WIDTH
    lp = log_norm - 0.5 * (x1 - 3 * torch.cos(2 * x0)) ** 2 - math.log(2 * COSINE_HALF_WIDTH)
    return torch.where(inside, lp, torch.full_like(lp, -math.inf))
