"""Synthetic 2-D data sets, deterministic given a seed."""

import math

import numpy as np
import torch


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


DATASETS_2D = {
    "banana": _banana,
    "rings": _rings,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
}


def make_2d(name, num_samples, seed=0, dtype=torch.float32, device=None):
    """``num_samples`` points of the named 2-D data set, as a ``(num_samples, 2)`` tensor.

    :param str name: one of :data:`DATASETS_2D`.
    :param int seed: the same seed gives the same points.
    """
    if name not in DATASETS_2D:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS_2D)}")
    rng = np.random.default_rng(seed)
    return torch.as_tensor(DATASETS_2D[name](rng, int(num_samples)), dtype=dtype, device=device)
