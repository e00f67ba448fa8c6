r"""Mixtures of von Mises--Fisher distributions on :math:`S^1` and :math:`S^2`: the density
estimation targets of Wang et al. [1], Section 6.1.2 and Appendix E.1.3, as defined in the
reference implementation.

* ``"s1"`` (on the circle, points in :math:`\mathbb R^2`):
  :math:`0.7\,\mathrm{vMF}(\mu_1, 2) + 0.3\,\mathrm{vMF}(\mu_2, 3)`, :math:`\mu_1 = (0, 1)`,
  :math:`\mu_2 = (1, -1)/\sqrt2`. (Appendix E.1.1 writes the concentrations as
  :math:`1/\sigma^2` of 2 and 3, i.e. 0.25 and 0.11; the reference code uses 2 and 3, and so do
  we.)
* ``"s2"`` (on the sphere, points in :math:`\mathbb R^3`): the reference code's four components
  (drawn there with seed 23), with the directions normalised after rounding to three decimals:

  ======================== ============= ======
  direction                concentration weight
  ======================== ============= ======
  (0.651, 0.025, -0.759)   5.567         0.075
  (0.600, 0.444, -0.665)   7.096         0.072
  (-0.206, -0.638, -0.742) 6.612         0.537
  (0.920, -0.180, 0.348)   2.147         0.316
  ======================== ============= ======

:func:`make_sphere` draws i.i.d. points (exactly, with SciPy's ``vonmises_fisher`` and
``numpy.random.default_rng(seed)``, in float64 on the CPU, converted at the end, like
:func:`~pyro_vsm.datasets.make_2d`); :func:`sphere_target` gives the mixture as a torch
distribution (:class:`~pyro_vsm.distributions.VonMisesFisher` components) whose ``log_prob`` is
the exact normalised log-density with respect to the surface measure;
:func:`sphere_log_prob` is a shortcut for it.

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
"""

import math

import numpy as np
import torch

from ..distributions.sphere import VonMisesFisher

__all__ = ["SPHERE_TARGETS", "make_sphere", "sphere_log_prob", "sphere_target"]

_R2 = 1 / math.sqrt(2.0)

#: ``name -> {"weights", "locs", "concentrations"}`` (plain Python lists).
SPHERE_TARGETS = {
    "s1": {
        "weights": [0.7, 0.3],
        "locs": [[0.0, 1.0], [_R2, -_R2]],
        "concentrations": [2.0, 3.0],
    },
    "s2": {
        "weights": [0.075, 0.072, 0.537, 0.316],
        "locs": [
            [0.651, 0.025, -0.759],
            [0.600, 0.444, -0.665],
            [-0.206, -0.638, -0.742],
            [0.920, -0.180, 0.348],
        ],
        "concentrations": [5.567, 7.096, 6.612, 2.147],
    },
}


def _spec(name):
    key = str(name).lower()
    if key not in SPHERE_TARGETS:
        raise ValueError(f"unknown sphere target {name!r}; choose from {sorted(SPHERE_TARGETS)}")
    spec = SPHERE_TARGETS[key]
    weights = np.asarray(spec["weights"], dtype=np.float64)
    locs = np.asarray(spec["locs"], dtype=np.float64)
    locs = locs / np.linalg.norm(locs, axis=-1, keepdims=True)
    return weights / weights.sum(), locs, np.asarray(spec["concentrations"], dtype=np.float64)


def sphere_target(name, dtype=torch.float64, device=None):
    r"""The named mixture as a :class:`torch.distributions.MixtureSameFamily` of
    :class:`~pyro_vsm.distributions.VonMisesFisher` components (exact ``log_prob``; its ``sample``
    uses the components' rejection sampler).

    :param str name: ``"s1"`` or ``"s2"``.
    :param torch.dtype dtype: dtype of the parameters.
    :param torch.device device: device of the parameters.
    """
    weights, locs, conc = _spec(name)
    as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=as_t(weights)),
        VonMisesFisher(as_t(locs), as_t(conc)),
    )


def sphere_log_prob(name, x):
    r"""Exact log-density of the named target at points ``x`` of shape ``(..., p)``, with
    respect to the surface measure (in ``x``'s dtype and on its device).

    :param str name: ``"s1"`` or ``"s2"``.
    :param torch.Tensor x: points on the sphere.
    """
    x = torch.as_tensor(x)
    return sphere_target(name, dtype=x.dtype, device=x.device).log_prob(x)


def make_sphere(name, num_samples, seed=0, dtype=torch.float32, device=None):
    r"""``num_samples`` i.i.d. points of the named target, shape ``(num_samples, p)``.

    :param str name: ``"s1"`` (:math:`p = 2`) or ``"s2"`` (:math:`p = 3`).
    :param int num_samples: number of points.
    :param int seed: the same seed gives the same points.
    :param torch.dtype dtype: dtype of the result.
    :param torch.device device: device of the result.
    """
    from scipy.stats import vonmises_fisher

    weights, locs, conc = _spec(name)
    n = int(num_samples)
    if n < 0:
        raise ValueError(f"num_samples must be non-negative, got {num_samples!r}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, weights)
    parts = [
        vonmises_fisher(mu, kappa).rvs(c, random_state=rng).reshape(c, len(mu))
        for mu, kappa, c in zip(locs, conc, counts, strict=True)
    ]
    points = np.concatenate(parts)[rng.permutation(n)]
    points = points / np.linalg.norm(points, axis=-1, keepdims=True)
    return torch.as_tensor(points, dtype=dtype, device=device)
