r"""The four 2-D potentials of Rezende & Mohamed [1] and exact samples from them.

Table 1 of [1] (Figure 3(a) plots :math:`e^{-U(z)}` on :math:`[-4, 4]^2`). With
:math:`z = (z_1, z_2)` and :math:`\sigma(x) = 1/(1 + e^{-x})`:

.. math::

    w_1(z) &= \sin\Big(\frac{2\pi z_1}{4}\Big), \qquad
    w_2(z) = 3\exp\Big(-\frac12\Big(\frac{z_1 - 1}{0.6}\Big)^2\Big), \qquad
    w_3(z) = 3\,\sigma\Big(\frac{z_1 - 1}{0.3}\Big),

    U_1(z) &= \frac12\Big(\frac{\|z\| - 2}{0.4}\Big)^2
        - \ln\Big(e^{-\frac12(\frac{z_1 - 2}{0.6})^2} + e^{-\frac12(\frac{z_1 + 2}{0.6})^2}\Big),

    U_2(z) &= \frac12\Big(\frac{z_2 - w_1(z)}{0.4}\Big)^2,

    U_3(z) &= -\ln\Big(e^{-\frac12(\frac{z_2 - w_1(z)}{0.35})^2}
        + e^{-\frac12(\frac{z_2 - w_1(z) + w_2(z)}{0.35})^2}\Big),

    U_4(z) &= -\ln\Big(e^{-\frac12(\frac{z_2 - w_1(z)}{0.4})^2}
        + e^{-\frac12(\frac{z_2 - w_1(z) + w_3(z)}{0.35})^2}\Big).

:func:`u1` ... :func:`u4` compute these in torch (any floating dtype and device, shape
``(..., 2) -> (...)``, differentiable; the ``-ln(e^a + e^b)`` terms via ``logaddexp``).

**Domain (the documented truncation).** :math:`e^{-U_2}`, :math:`e^{-U_3}` and :math:`e^{-U_4}`
do not depend on :math:`z_1` except through bounded, periodic or saturating terms, so they are
*not integrable on* :math:`\mathbb R^2`; a bounded domain is part of the definition. Here, as in
the paper's figure, the target of every potential is

.. math::

    p(z) = \frac{e^{-U(z)}\,\mathbb 1\{z \in [-4, 4]^2\}}{Z}, \qquad
    Z = \int_{[-4, 4]^2} e^{-U(z)}\,dz

(:data:`BOX` = 4). For :math:`U_1` the box cuts off a negligible part of an integrable density
(the ring has radius 2 and width 0.4; the mass outside is about :math:`10^{-8}`); for
:math:`U_4` the box cuts through one of the lower band's troughs at :math:`z_1 \approx 3`,
:math:`z_2 \approx -4`.

**Sampling.** :func:`make_potential` is exact rejection sampling: proposals uniform on the box,
accepted with probability :math:`e^{-U(z)}/M`, where :math:`M \ge \sup e^{-U}` is an analytic
bound (:data:`POTENTIAL_BOUNDS`): :math:`M_2 = 1`; :math:`M_3 = M_4 = 2` (a sum of two terms each
at most 1); :math:`M_1 = 1 + e^{-\frac12(2/0.6)^2}`, because the ring factor is at most 1 and for
every :math:`z_1` one of :math:`|z_1 \mp 2|` is at least 2. Accepted points are therefore i.i.d.
draws from :math:`p` exactly (up to floating-point rounding); acceptance rates are 10--13 %.
As :func:`~pyro_vsm.datasets.make_2d` does, the draws use ``numpy.random.default_rng(seed)`` (no
global random state) in float64 on the CPU and are converted to ``dtype``/``device`` at the end.

:func:`potential_log_partition` gives :math:`\log Z` by midpoint quadrature on the box (for the
true negative log-likelihood :math:`\mathbb E_p[U] + \log Z` of a data set, a reference value for
density estimates) and :func:`potential_log_prob` the normalised log-density.

References:

[1] `Variational Inference with Normalizing Flows`,
    Danilo Jimenez Rezende, Shakir Mohamed (2015)
"""

import functools
import math

import numpy as np
import torch

__all__ = [
    "BOX",
    "POTENTIALS",
    "POTENTIAL_BOUNDS",
    "make_potential",
    "potential_log_partition",
    "potential_log_prob",
    "u1",
    "u2",
    "u3",
    "u4",
]

#: Half-width of the square domain :math:`[-4, 4]^2` of every potential.
BOX = 4.0


def _w1(z):
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z):
    return 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z):
    return 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)


def _neg_log_two_bumps(a, b):
    r""":math:`-\ln(e^{-a^2/2} + e^{-b^2/2})`."""
    return -torch.logaddexp(-0.5 * a**2, -0.5 * b**2)


def _check(z):
    z = torch.as_tensor(z)
    if z.shape[-1:] != (2,):
        raise ValueError(f"potentials take points of shape (..., 2), got {tuple(z.shape)}")
    if not z.is_floating_point():
        z = z.to(torch.get_default_dtype())
    return z


def u1(z):
    r""":math:`U_1` (ring with two lobes), shape ``z.shape[:-1]``.

    :param torch.Tensor z: points, shape ``(..., 2)``.
    """
    z = _check(z)
    ring = 0.5 * ((torch.linalg.vector_norm(z, dim=-1) - 2) / 0.4) ** 2
    return ring + _neg_log_two_bumps((z[..., 0] - 2) / 0.6, (z[..., 0] + 2) / 0.6)


def u2(z):
    r""":math:`U_2` (sine band), shape ``z.shape[:-1]``.

    :param torch.Tensor z: points, shape ``(..., 2)``.
    """
    z = _check(z)
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def u3(z):
    r""":math:`U_3` (sine band splitting around :math:`z_1 = 1`), shape ``z.shape[:-1]``.

    :param torch.Tensor z: points, shape ``(..., 2)``.
    """
    z = _check(z)
    r = z[..., 1] - _w1(z)
    return _neg_log_two_bumps(r / 0.35, (r + _w2(z)) / 0.35)


def u4(z):
    r""":math:`U_4` (sine band with a sigmoid-shifted copy), shape ``z.shape[:-1]``.

    :param torch.Tensor z: points, shape ``(..., 2)``.
    """
    z = _check(z)
    r = z[..., 1] - _w1(z)
    return _neg_log_two_bumps(r / 0.4, (r + _w3(z)) / 0.35)


#: ``name -> U`` (torch, ``(..., 2) -> (...)``).
POTENTIALS = {"u1": u1, "u2": u2, "u3": u3, "u4": u4}

#: ``name -> M`` with :math:`e^{-U(z)} \le M` everywhere (see the module docstring).
POTENTIAL_BOUNDS = {
    "u1": 1.0 + math.exp(-0.5 * (2 / 0.6) ** 2),
    "u2": 1.0,
    "u3": 2.0,
    "u4": 2.0,
}


def _name(name):
    key = str(name).lower()
    if key not in POTENTIALS:
        raise ValueError(f"unknown potential {name!r}; choose from {sorted(POTENTIALS)}")
    return key


def make_potential(name, n, seed=0, dtype=torch.float32, device=None):
    r"""``n`` i.i.d. draws from :math:`p(z) \propto e^{-U(z)}` on :math:`[-4, 4]^2`, ``(n, 2)``.

    Exact rejection sampling from the uniform distribution on the box (see
    :mod:`pyro_vsm.datasets.potentials`).

    :param str name: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.
    :param int n: number of points.
    :param int seed: the same seed gives the same points.
    :param torch.dtype dtype: dtype of the result.
    :param torch.device device: device of the result.
    """
    key = _name(name)
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    potential, bound = POTENTIALS[key], POTENTIAL_BOUNDS[key]
    rng = np.random.default_rng(seed)
    accepted, count = [], 0
    batch = 4096
    while count < n:
        z = rng.uniform(-BOX, BOX, size=(batch, 2))
        u = rng.uniform(size=batch)
        density = torch.exp(-potential(torch.from_numpy(z))).numpy()
        keep = z[u * bound < density]
        accepted.append(keep)
        count += keep.shape[0]
        # the next batch is sized from the acceptance so far (a function of the draws only)
        rate = max(count, 1) / (batch * len(accepted))
        batch = int(min(max(4096, 1.2 * (n - count) / rate), 2**22))
    out = np.concatenate(accepted)[:n] if accepted else np.zeros((0, 2))
    return torch.as_tensor(out, dtype=dtype, device=device)


def _grid(num_grid):
    h = 2 * BOX / num_grid
    centres = -BOX + h * (np.arange(num_grid) + 0.5)
    z1, z2 = np.meshgrid(centres, centres, indexing="ij")
    return torch.from_numpy(np.stack([z1, z2], -1)), h


@functools.lru_cache(maxsize=32)
def potential_log_partition(name, num_grid=2000):
    r""":math:`\log Z = \log\int_{[-4,4]^2} e^{-U(z)}dz` by the midpoint rule on a
    ``num_grid`` × ``num_grid`` grid (float64; with the default the relative error is far below
    :math:`10^{-6}`).

    :param str name: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.
    :param int num_grid: the number of grid cells per coordinate.
    :returns: :math:`\log Z`, a Python float (cached per ``(name, num_grid)``).
    """
    key = _name(name)
    z, h = _grid(int(num_grid))
    log_f = -POTENTIALS[key](z)
    return float(torch.logsumexp(log_f.reshape(-1), 0)) + 2 * math.log(h)


def potential_log_prob(name, z):
    r"""Normalised :math:`\log p(z) = -U(z) - \log Z` (``-inf`` outside the box).

    :param str name: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.
    :param torch.Tensor z: points, shape ``(..., 2)``.
    """
    key = _name(name)
    z = _check(z)
    log_p = -POTENTIALS[key](z) - potential_log_partition(key)
    inside = (z.abs() <= BOX).all(-1)
    return torch.where(inside, log_p, torch.full_like(log_p, -math.inf))
