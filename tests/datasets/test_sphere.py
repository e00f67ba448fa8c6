r"""The vMF-mixture targets on S^1 and S^2: samples, exact density, normalisation."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from pyro_vsm.datasets import SPHERE_TARGETS, make_sphere, sphere_log_prob, sphere_target


def exact_mean(name):
    spec = SPHERE_TARGETS[name]
    p = len(spec["locs"][0])
    mean = np.zeros(p)
    for w, mu, k in zip(spec["weights"], spec["locs"], spec["concentrations"], strict=True):
        mu = np.asarray(mu) / np.linalg.norm(mu)
        mean += w * special.ive(p / 2, k) / special.ive(p / 2 - 1, k) * mu
    return mean / sum(spec["weights"])


@pytest.mark.parametrize("name,p", [("s1", 2), ("s2", 3)])
def test_samples(name, p):
    x = make_sphere(name, 20_000, seed=3, dtype=torch.float64)
    assert x.shape == (20_000, p)
    assert torch.allclose(x.norm(dim=-1), torch.ones(20_000, dtype=torch.float64))
    assert torch.equal(x, make_sphere(name, 20_000, seed=3, dtype=torch.float64))
    assert not torch.equal(x, make_sphere(name, 20_000, seed=4, dtype=torch.float64))
    se = x.std(0) / math.sqrt(len(x))
    assert ((x.mean(0) - torch.as_tensor(exact_mean(name))).abs() < 4 * se).all()
    assert make_sphere(name, 5).dtype == torch.float32
    assert make_sphere(name, 0).shape == (0, p)


def test_log_prob_against_scipy_mixture():
    x = make_sphere("s2", 50, seed=0, dtype=torch.float64)
    spec = SPHERE_TARGETS["s2"]
    dens = sum(
        w * stats.vonmises_fisher(np.asarray(mu) / np.linalg.norm(mu), k).pdf(x.numpy())
        for w, mu, k in zip(spec["weights"], spec["locs"], spec["concentrations"], strict=True)
    ) / sum(spec["weights"])
    assert np.allclose(sphere_log_prob("s2", x).numpy(), np.log(dens), rtol=1e-12)


def test_densities_are_normalised():
    theta = torch.arange(4000, dtype=torch.float64) * (2 * math.pi / 4000)
    circle = torch.stack([theta.cos(), theta.sin()], -1)
    assert sphere_log_prob("s1", circle).exp().sum() * 2 * math.pi / 4000 == pytest.approx(1.0)
    t, w = np.polynomial.legendre.leggauss(120)
    phi = np.arange(120) * (2 * np.pi / 120)
    t, phi = np.meshgrid(t, phi, indexing="ij")
    r = np.sqrt(1 - t**2)
    pts = torch.tensor(np.stack([r * np.cos(phi), r * np.sin(phi), t], -1))
    total = (sphere_log_prob("s2", pts).exp().numpy() * w[:, None]).sum() * 2 * np.pi / 120
    assert total == pytest.approx(1.0, abs=1e-10)


def test_target_distribution_and_errors():
    d = sphere_target("s1")
    assert d.sample((7,)).shape == (7, 2)
    assert sphere_log_prob("s1", torch.tensor([0.0, 1.0])).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown sphere target"):
        make_sphere("s3", 10)
    with pytest.raises(ValueError, match="non-negative"):
        make_sphere("s1", -1)
