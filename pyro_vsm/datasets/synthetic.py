r"""Synthetic 2-D data sets, deterministic given a seed.

:func:`make_2d` draws every data set with ``numpy.random.default_rng(seed)`` (a generator local to
the call: no global random state is read or changed) in float64 on the CPU and converts to the
requested ``dtype``/``device`` at the end, so the values do not depend on the device and the
float32 data are the float64 data rounded once. All sets are centred near the origin with
per-coordinate standard deviations between about 0.5 and 1.6, except the sets of minimum velocity
learning, kept at their paper's scale (:mod:`pyro_vsm.datasets.mvl`).

Standard toy sets: ``banana``, ``rings``, ``8gaussians``, ``checkerboard``, ``2spirals``.

Sets of *A Wasserstein minimum velocity approach* (:mod:`pyro_vsm.datasets.mvl`): ``mvl-banana``,
``cosine``.

Sets of *On the failure of variational score matching for VAE models* [1] (Section 5.1,
Figure 3, Appendix B.1, Figures 6--7).
The paper names only one of its "five synthetic datasets" (the "star dataset" of Figure 6) and
gives no formulas; the definitions below follow the data classes in the authors' reference code,
github.com/kevin-w-li/LatentScoreMatching, ``run_bilevel_toy.py`` (commit ``cbdab3d``: classes
``SparseData`` and ``Mixture``, selected by ``--dataset sparse|mixture``; the notebook
``bilevel_toy_data.ipynb`` imports the same two classes from a ``ToyDatasets`` module that the
published "subset of the code" does not include). The code here is written from that description,
not copied.

* ``star`` (alias ``"sparse"`` in :func:`make_2d`) -- sparse (ICA-style) source data: draw
  :math:`s \sim \mathcal N(0, I_2)`, apply :math:`u = \mathrm{sign}(s)\,|s|^2` element-wise and mix,
  :math:`x = c\,(u_1 a_1 + u_2 a_2) + c\,\sigma\,\epsilon` with :math:`a_1 = (1, 0.3)`,
  :math:`a_2 = (-0.3, 1)` (the rows of the reference's :math:`A`), :math:`\sigma = 0.01`,
  :math:`\epsilon \sim \mathcal N(0, I_2)`. The squaring makes one source dominate, so the points
  lie along four rays from the origin, :math:`\pm a_1` and :math:`\pm a_2` (two orthogonal lines
  tilted by :math:`\arctan 0.3 \approx 16.7^\circ`), with heavy tails. The reference divides
  :math:`A` by 10 (per-coordinate sd about 0.18); here :math:`c = 5` (sd about 0.9) to match the
  unit scale of the other sets, i.e. ``make_2d("star", ...) / 5`` has the reference's law
  (:data:`STAR_SCALE`).
  *Identification:* the reference code's ``sparse`` set is the paper's "star dataset" -- a
  well-supported inference, not stated in either source: Appendix B.1 says Figure 6 (the star
  set) used two hidden layers of 100 units and Section 5.1 that the other runs used 30, and the
  reference script sets ``Dh = 100`` for ``sparse`` and ``Dh = 30`` for ``mixture``; a scatter of
  the ``sparse`` samples is a four-armed star.
* ``mixture`` -- equal-weight mixture of two isotropic Gaussians with means :math:`(-0.5, -0.5)`
  and :math:`(0.5, 0.5)` and sd 0.2 (reference ``Mixture``, same scale; per-coordinate sd about
  0.54). The reference returns exactly ``n // 2`` points from each component, first one then the
  other (dropping one point for odd ``n``); here each point's component is drawn independently
  with probability 1/2, so ``n`` points are returned in random order.
  *Identification:* it is the second data set of the reference script; that it is one of the two
  sets of Figure 3 is a guess (the reference script has exactly two sets and Figure 3 shows two).

The other three of the paper's five sets (Figure 7) are not named in the paper and not defined in
the published reference code, so they are not provided; whether any of the standard sets above is
one of them is unknown.

References:

[1] `On the failure of variational score matching for VAE models`,
    Li K. Wenliang (2022)
"""

import math

import numpy as np
import torch

from .mvl import MVL_DATASETS_2D


def _banana(rng, n):
    x1 = rng.normal(size=n)
    x2 = 0.5 * x1**2 + 0.5 * rng.normal(size=n) - 1.0
    return np.stack([x1, x2], -1)


def _rings(rng, n):
    radius = rng.choice([1.0, 2.0, 3.0], size=n)
    angle = rng.uniform(0, 2 * math.pi, size=n)
    r = radius + 0.1 * rng.normal(size=n)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], -1)


def _eight_gaussians(rng, n):
    k = rng.integers(0, 8, size=n)
    centres = 2.0 * np.stack([np.cos(k * math.pi / 4), np.sin(k * math.pi / 4)], -1)
    return centres + 0.2 * rng.normal(size=(n, 2))


def _checkerboard(rng, n):
    x1 = rng.uniform(-2, 2, size=n)
    x2 = rng.uniform(0, 1, size=n) + rng.integers(0, 2, size=n) * 2 - 2
    x2 = x2 + (np.floor(x1) % 2)
    return np.stack([x1, x2], -1)


def _two_spirals(rng, n):
    t = np.sqrt(rng.uniform(size=n)) * 3 * math.pi
    sign = rng.choice([-1.0, 1.0], size=n)
    pts = sign[:, None] * np.stack([t * np.cos(t), t * np.sin(t)], -1) / 3
    return pts + 0.1 * rng.normal(size=(n, 2))


#: Factor by which ``star`` is scaled up from the reference code's ``sparse`` data.
STAR_SCALE = 5.0
#: Ray directions of ``star`` (rows of the reference code's mixing matrix, before scaling).
STAR_DIRECTIONS = ((1.0, 0.3), (-0.3, 1.0))
#: Component means and standard deviation of ``mixture``.
MIXTURE_MEANS = ((-0.5, -0.5), (0.5, 0.5))
MIXTURE_SD = 0.2


def _star(rng, n):
    s = rng.normal(size=(n, 2))
    u = np.sign(s) * s**2
    x = u @ (np.asarray(STAR_DIRECTIONS) / 10) + 0.01 * rng.normal(size=(n, 2))
    return STAR_SCALE * x


def _mixture(rng, n):
    k = rng.integers(0, len(MIXTURE_MEANS), size=n)
    return np.asarray(MIXTURE_MEANS)[k] + MIXTURE_SD * rng.normal(size=(n, 2))


DATASETS_2D = {
    "banana": _banana,
    "rings": _rings,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
    "star": _star,
    "mixture": _mixture,
    **MVL_DATASETS_2D,
}

# Other accepted names: the reference code calls ``star`` "sparse".
_ALIASES_2D = {"sparse": "star"}


def make_2d(name, num_samples, seed=0, dtype=torch.float32, device=None):
    r"""``num_samples`` points of the named 2-D data set, as a ``(num_samples, 2)`` tensor.

    :param str name: one of :data:`DATASETS_2D` (or ``"sparse"``, another name for ``"star"``).
    :param int num_samples: number of points.
    :param int seed: the same seed gives the same points.
    :param torch.dtype dtype: dtype of the result.
    :param torch.device device: device of the result.
    """
    name = _ALIASES_2D.get(name, name)
    if name not in DATASETS_2D:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS_2D)}")
    rng = np.random.default_rng(seed)
    return torch.as_tensor(DATASETS_2D[name](rng, int(num_samples)), dtype=dtype, device=device)
