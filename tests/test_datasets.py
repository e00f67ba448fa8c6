import math

import pytest
import torch

from pyro_vsm.datasets import DATASETS_2D, MVL_DATASETS_2D, make_2d
from pyro_vsm.datasets.synthetic import (
    MIXTURE_MEANS,
    MIXTURE_SD,
    STAR_DIRECTIONS,
    STAR_SCALE,
)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def test_paper_sets_registered():
    assert {"star", "mixture"} <= set(DATASETS_2D)


@pytest.mark.parametrize("name", sorted(DATASETS_2D))
def test_deterministic_and_finite(name):
    a, b, c = make_2d(name, 300, seed=1), make_2d(name, 300, seed=1), make_2d(name, 300, seed=2)
    assert a.shape == (300, 2) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(DATASETS_2D))
@pytest.mark.parametrize("n", [1, 7])
def test_small_and_odd_sizes(name, n):
    assert make_2d(name, n, seed=0).shape == (n, 2)


@pytest.mark.parametrize("name", sorted(DATASETS_2D))
def test_independent_of_global_rng(name):
    torch.manual_seed(0)
    a = make_2d(name, 50, seed=3)
    torch.manual_seed(1)
    torch.rand(10)
    b = make_2d(name, 50, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(DATASETS_2D))
def test_dtype_and_device(name, dtype, device):
    x = make_2d(name, 100, seed=4, dtype=dtype, device=device)
    assert x.dtype == dtype and x.device.type == device and x.shape == (100, 2)
    # same values on every device / precision: sampled in float64 on the CPU, converted once
    ref = make_2d(name, 100, seed=4, dtype=torch.float64)
    assert torch.equal(x.cpu(), ref.to(dtype))


@pytest.mark.parametrize("name", sorted(set(DATASETS_2D) - set(MVL_DATASETS_2D)))  # paper scale
def test_roughly_unit_scale(name):
    x = make_2d(name, 20000, seed=0, dtype=torch.float64)
    assert (x.mean(0).abs() < 0.6).all()
    assert ((x.std(0) > 0.3) & (x.std(0) < 2.0)).all()


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        make_2d("mnist", 10)


def test_sparse_is_star():
    assert torch.equal(make_2d("sparse", 100, seed=5), make_2d("star", 100, seed=5))


def test_banana_moments():
    x = make_2d("banana", 20000, seed=0, dtype=torch.float64)
    # x1 ~ N(0, 1), E[x2] = 0.5 E[x1²] - 1 = -0.5
    assert x[:, 0].mean().abs() < 0.03 and x[:, 0].var().sub(1).abs() < 0.05
    assert (x[:, 1].mean() + 0.5).abs() < 0.03


def _angle_to_rays(x):
    """Angle (degrees, in [0, 45]) between each point and the nearest of the four star rays."""
    basis = torch.tensor(STAR_DIRECTIONS, dtype=x.dtype)  # rows a1, a2 (orthogonal)
    u = x @ torch.linalg.inv(basis)  # x = u1 a1 + u2 a2
    ang = torch.rad2deg(torch.atan2(u[:, 1].abs(), u[:, 0].abs()))  # 0 on ±a1, 90 on ±a2
    return torch.minimum(ang, 90 - ang)


def test_star_points_lie_along_four_rays():
    x = make_2d("star", 20000, seed=0, dtype=torch.float64)
    far = x[x.norm(dim=-1) > 0.5]  # the noise (sd 0.05) blurs angles near the origin
    d = _angle_to_rays(far)
    # expected about 0.52 within 10° of a ray and 0.10 within 10° of a bisector; an isotropic
    # Gaussian, or a star with other ray directions, gives about 0.22 for both
    assert (d < 10).double().mean() > 0.45
    assert (d > 35).double().mean() < 0.15
    # each of the four rays ±a1, ±a2 is populated about equally
    u = far[d < 10] @ torch.linalg.inv(torch.tensor(STAR_DIRECTIONS, dtype=x.dtype))
    on_a1 = u[:, 0].abs() > u[:, 1].abs()
    counts = torch.stack(
        [
            (on_a1 & (u[:, 0] > 0)).sum(),
            (on_a1 & (u[:, 0] < 0)).sum(),
            (~on_a1 & (u[:, 1] > 0)).sum(),
            (~on_a1 & (u[:, 1] < 0)).sum(),
        ]
    ).double()
    assert (counts / counts.sum() - 0.25).abs().max() < 0.03


def test_star_moments_match_reference_scale():
    x = make_2d("star", 50000, seed=1, dtype=torch.float64)
    # x = c (u @ A/10) + c 0.01 eps with u = sign(s) s², E[u_i²] = 3:
    # Cov(x) = c² (3 AᵀA / 100 + 1e-4 I), and AᵀA = 1.09 I since the rows of A are orthogonal
    var = STAR_SCALE**2 * (3 * 1.09 / 100 + 1e-4)
    assert (x.mean(0).abs() < 0.03).all()
    assert ((x.var(0) / var - 1).abs() < 0.1).all()
    # heavy tails: the marginal kurtosis of u is E[s⁸]/E[s⁴]² = 105/9 ≈ 11.7 (3 for a Gaussian)
    z = (x - x.mean(0)) / x.std(0)
    assert ((z**4).mean(0) > 6).all()


def test_mixture_two_clusters_by_nearest_centre():
    n = 20000
    x = make_2d("mixture", n, seed=0, dtype=torch.float64)
    centres = torch.tensor(MIXTURE_MEANS, dtype=x.dtype)
    k = torch.cdist(x, centres).argmin(-1)
    counts = torch.bincount(k, minlength=len(centres)).double()
    assert (counts / n - 0.5).abs().max() < 0.02  # equal weights
    for j, c in enumerate(centres):
        xj = x[k == j]
        # centres sit 1.41 apart (3.5 sd to the midline), so nearest-centre labels are
        # essentially exact and each cluster is N(c, 0.2² I)
        assert (xj.mean(0) - c).abs().max() < 0.01
        assert ((xj.std(0) / MIXTURE_SD - 1).abs() < 0.03).all()
        assert (xj - c).norm(dim=-1).max() < 8 * MIXTURE_SD
    # components are interleaved (random order), unlike the reference's sorted halves
    assert 0.3 < (k[: n // 2] == 0).double().mean() < 0.7


def test_mixture_points_close_to_a_centre():
    x = make_2d("mixture", 5000, seed=2, dtype=torch.float64)
    dist = torch.cdist(x, torch.tensor(MIXTURE_MEANS, dtype=x.dtype)).min(-1).values
    # squared distance / sd² is chi² with 2 dof: P(dist > 3 sd) = exp(-4.5) ≈ 0.011
    assert (dist > 3 * MIXTURE_SD).double().mean() < 0.02
    assert math.isclose(float((dist**2).mean() / MIXTURE_SD**2), 2.0, rel_tol=0.08)
