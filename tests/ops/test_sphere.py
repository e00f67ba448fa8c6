r"""Sphere geometry: projections, retractions, exponential and log maps, area, stereographic chart."""

import math

import pytest
import torch

from pyro_vsm.ops import (
    check_on_sphere,
    exp_map,
    log_map,
    log_sphere_area,
    normalize_retraction,
    stereographic_chart,
    stereographic_inverse,
    stereographic_log_det_metric,
    stereographic_tangent,
    tangent_projection,
)


def points(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n + 1, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def tangents(x, scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return scale * tangent_projection(x, torch.randn(x.shape, generator=g, dtype=x.dtype))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tangent_projection(n):
    x = points(100, n)
    v = torch.randn(100, n + 1, dtype=torch.float64)
    pv = tangent_projection(x, v)
    assert torch.allclose((pv * x).sum(-1), torch.zeros(100, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(tangent_projection(x, pv), pv, atol=1e-14)
    assert torch.allclose(v - pv, (v * x).sum(-1, keepdim=True) * x, atol=1e-14)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_retractions_stay_on_sphere_and_agree_to_second_order(n):
    x = points(200, n)
    v = tangents(x)
    for retract in (normalize_retraction, exp_map):
        y = retract(x, v)
        assert torch.allclose(y.norm(dim=-1), torch.ones(200, dtype=torch.float64), atol=1e-14)
        assert torch.allclose(retract(x, torch.zeros_like(v)), x, atol=1e-15)
    # both are x + v - |v|^2 x / 2 + O(|v|^3): halving v divides the gap by about 8
    gaps = []
    for t in (1e-2, 5e-3):
        w = t * v
        second = x + w - 0.5 * w.pow(2).sum(-1, keepdim=True) * x
        gaps.append((normalize_retraction(x, w) - second).norm(dim=-1).max())
        assert (exp_map(x, w) - second).norm(dim=-1).max() < 10 * t**3 * v.norm(dim=-1).max() ** 3
    assert 6 < gaps[0] / gaps[1] < 10


@pytest.mark.parametrize("n", [1, 2, 5])
def test_exp_map_is_a_geodesic_and_log_map_inverts_it(n):
    x = points(300, n)
    v = tangents(x)
    v = v * (3.0 * torch.rand(300, 1, dtype=torch.float64) / v.norm(dim=-1, keepdim=True))
    y = exp_map(x, v)
    # the geodesic distance is |v| (all |v| < 3 < pi)
    dist = torch.atan2(tangent_projection(x, y).norm(dim=-1), (x * y).sum(-1))
    assert torch.allclose(dist, v.norm(dim=-1), atol=1e-12)
    assert torch.allclose(log_map(x, y), v, atol=1e-10)
    assert torch.allclose(log_map(x, x), torch.zeros_like(x), atol=1e-15)
    assert torch.isfinite(log_map(x, -x)).all()


def test_exp_and_log_maps_have_finite_gradients_at_zero():
    x = points(4, 2)
    v = torch.zeros_like(x, requires_grad=True)
    (g,) = torch.autograd.grad(exp_map(x, v).sum(), v)
    assert torch.isfinite(g).all()
    y = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(log_map(x, y).sum(), y)
    assert torch.isfinite(g).all()


def test_log_sphere_area():
    assert log_sphere_area(1) == pytest.approx(math.log(2 * math.pi), rel=1e-15)
    assert log_sphere_area(2) == pytest.approx(math.log(4 * math.pi), rel=1e-15)
    assert log_sphere_area(3) == pytest.approx(math.log(2 * math.pi**2), rel=1e-15)
    assert log_sphere_area(0) == pytest.approx(math.log(2.0))
    # |S^n| = 2 pi |S^{n-2}| / (n - 1)
    for n in range(3, 40):
        expected = math.log(2 * math.pi / (n - 1)) + log_sphere_area(n - 2)
        assert log_sphere_area(n) == pytest.approx(expected, rel=1e-13)
    for bad in (-1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="n must be a non-negative integer"):
            log_sphere_area(bad)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_stereographic_chart_round_trip_and_hemisphere_flip(n):
    x = points(500, n)
    u, s = stereographic_chart(x)
    assert u.shape == (500, n) and s.shape == (500,)
    assert (u.norm(dim=-1) <= 1 + 1e-12).all()
    assert torch.equal(s, torch.where(x[:, -1] < 0, -1.0, 1.0).to(x.dtype))
    assert torch.allclose(stereographic_inverse(u, s), x, atol=1e-14)
    # any chart point maps back onto the sphere, in the requested hemisphere
    far = 3 * torch.randn(50, n, dtype=torch.float64)
    y = stereographic_inverse(far, -torch.ones(50, dtype=torch.float64))
    assert torch.allclose(y.norm(dim=-1), torch.ones(50, dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_stereographic_metric_and_tangent_map(n):
    x = points(20, n)
    u, s = stereographic_chart(x)
    log_det = stereographic_log_det_metric(u)
    for i in range(20):
        jac = torch.autograd.functional.jacobian(
            lambda w, i=i: stereographic_inverse(w, s[i]), u[i]
        )  # (n + 1, n)
        metric = jac.T @ jac
        lam2 = 4 / (1 + u[i].pow(2).sum()) ** 2
        assert torch.allclose(metric, lam2 * torch.eye(n, dtype=x.dtype), atol=1e-13)
        assert torch.logdet(metric) == pytest.approx(log_det[i].item(), abs=1e-12)
        # stereographic_tangent inverts the differential on the tangent space
        v = tangents(x[i : i + 1], seed=i)[0]
        z = stereographic_tangent(x[i], v)
        assert torch.allclose(jac @ z, v, atol=1e-13)


def test_chart_noise_has_the_inverse_metric_as_covariance():
    x = points(1, 2, seed=3).expand(200_000, 3)
    xi = torch.randn(200_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = stereographic_tangent(x, tangent_projection(x, xi))
    u, _ = stereographic_chart(x[:1])
    inv_metric = (1 + u.pow(2).sum()) ** 2 / 4
    cov = torch.cov(z.T)
    assert torch.allclose(cov, inv_metric * torch.eye(2, dtype=x.dtype), atol=0.02 * inv_metric)


def test_check_on_sphere():
    x = points(10, 2)
    assert check_on_sphere(x) is x
    assert check_on_sphere(x.float()) is not None
    with pytest.raises(ValueError, match="site 'z' must lie on the unit sphere"):
        check_on_sphere(1.01 * x, name="site 'z'")
    bad = x.clone()
    bad[3] = math.nan
    with pytest.raises(ValueError, match="1 of 10 points"):
        check_on_sphere(bad)
    with pytest.raises(ValueError, match="shape"):
        check_on_sphere(torch.ones(5, 1))
    check_on_sphere(torch.empty(4, 3, device="meta"))  # no values to check


def test_functions_run_on_meta():
    x = torch.empty(6, 4, device="meta")
    v = torch.empty(6, 4, device="meta")
    for out in (
        tangent_projection(x, v),
        normalize_retraction(x, v),
        exp_map(x, v),
        log_map(x, v),
        stereographic_inverse(*stereographic_chart(x)),
        stereographic_tangent(x, v),
        stereographic_log_det_metric(x[:, :3]),
    ):
        assert out.device.type == "meta"
