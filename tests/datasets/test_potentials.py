import math

import numpy as np
import pytest
import torch

from pyro_vsm.datasets import POTENTIALS, make_potential
from pyro_vsm.datasets.potentials import (
    BOX,
    POTENTIAL_BOUNDS,
    potential_log_partition,
    potential_log_prob,
    u1,
    u2,
    u3,
    u4,
)

NAMES = ("u1", "u2", "u3", "u4")
NUM = 60_000


def _grid(num_grid=1000):
    h = 2 * BOX / num_grid
    c = -BOX + h * (np.arange(num_grid) + 0.5)
    z1, z2 = np.meshgrid(c, c, indexing="ij")
    return torch.from_numpy(np.stack([z1, z2], -1)).reshape(-1, 2), h


def _quadrature_density(name, num_grid=1000):
    z, h = _grid(num_grid)
    f = torch.exp(-POTENTIALS[name](z)).double()
    return z, f / f.sum()  # probability of each grid cell


@pytest.fixture(scope="module")
def samples():
    return {name: make_potential(name, NUM, seed=123, dtype=torch.float64) for name in NAMES}


def test_formulas_at_points():
    # hand-evaluated values of Rezende & Mohamed's Table 1 formulas
    z = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, -2.0]], dtype=torch.float64)
    g = lambda a: math.exp(-0.5 * a**2)  # noqa: E731
    w1 = [0.0, 0.0, 1.0, 1.0]
    w2 = [3 * g(1 / 0.6), 3 * g(1 / 0.6), 3.0, 3.0]
    w3 = [3 / (1 + math.exp(-1 / 0.3)), 3 / (1 + math.exp(1 / 0.3)), 1.5, 1.5]
    for i, (a, b) in enumerate(z.tolist()):
        r = math.hypot(a, b)
        e1 = 0.5 * ((r - 2) / 0.4) ** 2 - math.log(g((a - 2) / 0.6) + g((a + 2) / 0.6))
        e2 = 0.5 * ((b - w1[i]) / 0.4) ** 2
        e3 = -math.log(g((b - w1[i]) / 0.35) + g((b - w1[i] + w2[i]) / 0.35))
        e4 = -math.log(g((b - w1[i]) / 0.4) + g((b - w1[i] + w3[i]) / 0.35))
        for fn, expected in ((u1, e1), (u2, e2), (u3, e3), (u4, e4)):
            assert float(fn(z[i])) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_potentials_shapes_dtypes_grad():
    z = torch.randn(3, 5, 2, requires_grad=True)
    for fn in POTENTIALS.values():
        out = fn(z)
        assert out.shape == (3, 5) and out.dtype == torch.float32
        (g,) = torch.autograd.grad(out.sum(), z)
        assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="shape"):
        u1(torch.zeros(4, 3))


@pytest.mark.parametrize("name", NAMES)
def test_bounds_hold_on_grid(name):
    z, _ = _grid(800)
    assert torch.exp(-POTENTIALS[name](z)).max() <= POTENTIAL_BOUNDS[name]


def test_deterministic_and_shapes():
    a = make_potential("u3", 500, seed=7)
    b = make_potential("u3", 500, seed=7)
    c = make_potential("u3", 500, seed=8)
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert make_potential("U1", 0).shape == (0, 2)
    d = make_potential("u2", 10, seed=7, dtype=torch.float64)
    assert d.dtype == torch.float64
    # the float32 draws are the float64 draws rounded once
    assert torch.equal(make_potential("u2", 10, seed=7).double(), d.float().double())
    with pytest.raises(ValueError, match="unknown potential"):
        make_potential("u5", 3)


@pytest.mark.parametrize("name", NAMES)
def test_samples_inside_box(samples, name):
    assert samples[name].abs().max() <= BOX


@pytest.mark.parametrize("name", NAMES)
def test_moments_match_quadrature(samples, name):
    """First and second moments within 4.5 Monte-Carlo standard errors of the quadrature values."""
    z, p = _quadrature_density(name)
    x = samples[name]
    features = lambda v: torch.stack(  # noqa: E731
        [v[:, 0], v[:, 1], v[:, 0] ** 2, v[:, 1] ** 2, v[:, 0] * v[:, 1]], -1
    )
    exact = (p[:, None] * features(z)).sum(0)
    f = features(x)
    sem = f.std(0) / math.sqrt(x.shape[0])
    assert ((f.mean(0) - exact).abs() < 4.5 * sem).all(), (f.mean(0), exact, sem)


@pytest.mark.parametrize("name", NAMES)
def test_cell_probabilities_chi_square(samples, name):
    """Counts on an 8x8 partition of the box agree with the quadrature cell probabilities."""
    num_grid = 800  # 100 x 100 quadrature points per cell
    z, p = _quadrature_density(name, num_grid)
    cells = p.reshape(8, num_grid // 8, 8, num_grid // 8).sum((1, 3)).reshape(-1)
    x = samples[name].numpy()
    idx = np.clip(((x + BOX) / (2 * BOX / 8)).astype(int), 0, 7)
    counts = np.bincount(idx[:, 0] * 8 + idx[:, 1], minlength=64)
    expected = cells.numpy() * x.shape[0]
    used = expected > 5  # the other cells are pooled into one bin
    observed = np.append(counts[used], counts[~used].sum())
    expected = np.append(expected[used], expected[~used].sum())
    chi2 = ((observed - expected) ** 2 / expected).sum()
    dof = observed.size - 1
    # P(chi2_dof > dof + 5 sqrt(2 dof)) is below 1e-4 for these dof
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


@pytest.mark.parametrize("name", NAMES)
def test_log_partition_and_log_prob(name):
    log_z = potential_log_partition(name)
    assert log_z == pytest.approx(potential_log_partition(name, 1500), abs=1e-6)
    z, h = _grid(600)
    total = torch.logsumexp(potential_log_prob(name, z), 0) + 2 * math.log(h)
    assert float(total) == pytest.approx(0.0, abs=1e-4)
    outside = potential_log_prob(name, torch.tensor([[4.5, 0.0]]))
    assert outside.item() == -math.inf
