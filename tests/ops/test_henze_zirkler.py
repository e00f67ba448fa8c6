"""Tests of :func:`pyro_vsm.ops.henze_zirkler`.

The reference below is an independent numpy/scipy transcription of the published statistic
(Henze & Zirkler 1990; covariance divisor n, statistic scaled by n): explicit pairwise differences,
``np.linalg.solve`` against the covariance, no whitening, no Gram expansion.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyro_vsm.evaluation import henze_zirkler
from pyro_vsm.ops.henze_zirkler import henze_zirkler_null_moments

F64 = torch.float64


def _ref_beta(n, p):
    return (
        (1.0 / np.sqrt(2.0)) * ((2.0 * p + 1.0) / 4.0) ** (1.0 / (p + 4.0)) * n ** (1.0 / (p + 4.0))
    )


def _ref_hz(x):
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    beta = _ref_beta(n, p)
    xc = x - x.mean(axis=0)
    S = xc.T @ xc / n
    diff = x[:, None, :] - x[None, :, :]  # (n, n, p)
    d_ij = np.einsum(
        "ijk,ijk->ij", diff, np.linalg.solve(S, diff.reshape(-1, p).T).T.reshape(n, n, p)
    )
    d_i = np.einsum("ik,ik->i", xc, np.linalg.solve(S, xc.T).T)
    b2 = beta**2
    return (
        np.exp(-b2 * d_ij / 2).sum() / n
        - 2 * (1 + b2) ** (-p / 2) * np.exp(-b2 * d_i / (2 * (1 + b2))).sum()
        + n * (1 + 2 * b2) ** (-p / 2)
    )


def _ref_pvalue(hz, n, p):
    """Lognormal approximation with the Henze-Zirkler null moments, via scipy.stats.lognorm."""
    b = _ref_beta(n, p)
    a = 1 + 2 * b**2
    w = (1 + b**2) * (1 + 3 * b**2)
    mu = 1 - a ** (-p / 2) * (1 + p * b**2 / a + p * (p + 2) * b**4 / (2 * a**2))
    var = (
        2 * (1 + 4 * b**2) ** (-p / 2)
        + 2 * a ** (-p) * (1 + 2 * p * b**4 / a**2 + 3 * p * (p + 2) * b**8 / (4 * a**4))
        - 4 * w ** (-p / 2) * (1 + 3 * p * b**4 / (2 * w) + p * (p + 2) * b**8 / (2 * w**2))
    )
    # lognormal with the same mean and variance as the statistic
    sigma = np.sqrt(np.log1p(var / mu**2))
    scale = mu / np.sqrt(1 + var / mu**2)
    return stats.lognorm.sf(hz, s=sigma, scale=scale), mu, var


def _samples(kind, n, p, seed):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=(n, p))
    if kind == "uniform":
        return rng.uniform(-1, 1, size=(n, p))
    if kind == "bimodal":
        return rng.normal(size=(n, p)) + 2.5 * rng.choice([-1.0, 1.0], size=(n, 1))
    if kind == "exponential":
        return rng.exponential(size=(n, p))
    raise AssertionError(kind)


# ------------------------------------------------------------------------------------------
# agreement with the published formula


@pytest.mark.parametrize("p", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [9, 40, 257])
@pytest.mark.parametrize("kind", ["normal", "exponential"])
def test_matches_numpy_reference(p, n, kind):
    x = _samples(kind, n, p, seed=100 * p + n)
    # mix the coordinates so that the covariance is not diagonal
    x = x @ np.random.default_rng(1).normal(size=(p, p)) + 3.0
    got = henze_zirkler(torch.tensor(x, dtype=F64))
    assert got.dtype == F64 and got.shape == ()
    assert float(got) == pytest.approx(_ref_hz(x), rel=1e-8)


def test_one_dimensional_input_is_p1():
    x = torch.tensor(_samples("exponential", 50, 1, 3), dtype=F64)
    assert torch.equal(henze_zirkler(x[:, 0]), henze_zirkler(x))
    assert float(henze_zirkler(x[:, 0])) == pytest.approx(_ref_hz(x.numpy()), rel=1e-8)


@pytest.mark.parametrize("p,n", [(1, 30), (2, 100), (4, 60)])
def test_pvalue_matches_scipy_lognormal(p, n):
    for kind, seed in (("normal", 0), ("uniform", 1), ("normal", 2)):
        x = _samples(kind, n, p, seed)
        hz, pv = henze_zirkler(torch.tensor(x, dtype=F64), return_pvalue=True)
        ref, mu, var = _ref_pvalue(float(hz), n, p)
        assert float(pv) == pytest.approx(ref, rel=1e-9, abs=1e-300)
        assert henze_zirkler_null_moments(n, p) == pytest.approx((mu, var), rel=1e-12)


def test_null_moments_and_calibration():
    # Under normality the simulated mean/variance of HZ match the published null moments and the
    # lognormal p-value rejects at about the nominal rate (400 replicates: the standard error of
    # the mean is 0.010, of the 5% rejection rate 0.011).
    n, p, reps = 100, 2, 400
    gen = torch.Generator().manual_seed(0)
    hz, pv = [], []
    for _ in range(reps):
        h, q = henze_zirkler(torch.randn(n, p, generator=gen, dtype=F64), return_pvalue=True)
        hz.append(float(h))
        pv.append(float(q))
    mu, var = henze_zirkler_null_moments(n, p)
    assert np.mean(hz) == pytest.approx(mu, abs=0.04)
    assert np.var(hz) == pytest.approx(var, rel=0.25)
    assert 0.02 <= np.mean(np.array(pv) < 0.05) <= 0.09
    assert 0.06 <= np.mean(np.array(pv) < 0.10) <= 0.15


# ------------------------------------------------------------------------------------------
# properties


@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_affine_invariance(p):
    rng = np.random.default_rng(p)
    x = torch.tensor(_samples("exponential", 120, p, p), dtype=F64)
    M = torch.tensor(rng.normal(size=(p, p)) + 2 * np.eye(p), dtype=F64)
    shift = torch.tensor(rng.normal(size=p) * 10, dtype=F64)
    base = henze_zirkler(x)
    assert float(henze_zirkler(x @ M + shift)) == pytest.approx(float(base), rel=1e-9)
    scales = torch.tensor([10.0 ** (3 - 2 * k) for k in range(p)], dtype=F64)  # 1e3 ... 1e-5
    assert float(henze_zirkler(x * scales - 7.0)) == pytest.approx(float(base), rel=1e-9)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    assert float(henze_zirkler(x[perm])) == pytest.approx(float(base), rel=1e-12)


@pytest.mark.parametrize("p", [1, 2, 5])
def test_normal_small_non_normal_large(p):
    # thresholds in null standard deviations; for n = 500 the null mean/sd of HZ are
    # 0.48/0.32 (p=1), 0.72/0.21 (p=2), 0.93/0.056 (p=5)
    n = 500
    mu, var = henze_zirkler_null_moments(n, p)
    sd = math.sqrt(var)
    hz, pv = henze_zirkler(
        torch.tensor(_samples("normal", n, p, 10), dtype=F64), return_pvalue=True
    )
    assert float(hz) < mu + 3 * sd and float(pv) > 0.05
    for kind in ("uniform", "bimodal"):
        hz, pv = henze_zirkler(
            torch.tensor(_samples(kind, n, p, 11), dtype=F64), return_pvalue=True
        )
        assert float(hz) > mu + 10 * sd and float(hz) > 1.5, kind
        assert float(pv) < 1e-6, kind


def test_float32_close_to_float64():
    x = torch.tensor(_samples("uniform", 300, 3, 5), dtype=F64)
    h32 = henze_zirkler(x.float())
    assert h32.dtype == torch.float32
    assert float(h32) == pytest.approx(float(henze_zirkler(x)), rel=1e-4)


def test_jitter():
    x = torch.tensor(_samples("normal", 200, 3, 6), dtype=F64)
    exact = float(henze_zirkler(x))
    assert float(henze_zirkler(x, jitter=1e-10)) == pytest.approx(exact, rel=1e-8)
    # collinear codes: an error without jitter, a large finite value with it
    bad = torch.cat([x, x[:, :1] - 2 * x[:, 1:2]], 1)
    with pytest.raises(ValueError, match="codes.*singular"):
        henze_zirkler(bad)
    for dtype in (torch.float32, F64):
        reg = henze_zirkler(bad.to(dtype), jitter=1e-4)
        assert torch.isfinite(reg) and float(reg) > 5.0


# ------------------------------------------------------------------------------------------
# gradients


def test_gradient_flows_float32():
    x = torch.tensor(_samples("uniform", 200, 3, 7), dtype=torch.float32, requires_grad=True)
    hz, pv = henze_zirkler(x, return_pvalue=True)
    grad, gp = (torch.autograd.grad(v, x, retain_graph=True)[0] for v in (hz, pv))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.isfinite(gp).all() and gp.abs().sum() > 0


@pytest.mark.parametrize("p", [1, 2, 3])
def test_gradcheck(p):
    x = torch.tensor(_samples("exponential", 7, p, 8 + p), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(henze_zirkler, (x,))
    assert torch.autograd.gradcheck(lambda c: henze_zirkler(c, return_pvalue=True)[1], (x,))


def test_descent_makes_codes_more_normal():
    # the LiBI use: gradient steps on the penalty move uniform codes towards normality
    x = torch.tensor(_samples("uniform", 200, 2, 9), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.02)
    start = float(henze_zirkler(x.detach()))
    for _ in range(20):
        opt.zero_grad()
        henze_zirkler(x).backward()
        opt.step()
    assert start > 2.5 and float(henze_zirkler(x.detach())) < 0.2 * start


# ------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    "codes,match",
    [
        (torch.tensor(1.0), "codes must have shape"),
        (torch.zeros(4, 2, 2), "codes must have shape"),
        (torch.zeros(5, 0), "codes must have at least one coordinate"),
        (torch.randn(1, 2), "codes needs at least 2 points"),
        (torch.randn(0), "codes needs at least 2 points"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [1.0, 3.0]]), "codes contains non-finite"),
        (torch.tensor([[0.0, 1.0], [float("inf"), 2.0], [1.0, 3.0]]), "codes contains non-finite"),
        (torch.ones(10, 2, dtype=torch.int64), "codes must have a real floating-point dtype"),
        (torch.ones(10, 2), "codes has .*zero variance"),
        # a constant 0.1 whose float32 mean is off by one rounding step: still constant
        (torch.tensor([[float(k), 0.1] for k in range(7)]), r"codes has .*zero variance .*\[1\]"),
        (torch.randn(3, 4), "covariance of codes is .*singular"),
    ],
)
def test_bad_codes(codes, match):
    with pytest.raises(ValueError, match=match):
        henze_zirkler(codes)


def test_bad_jitter_and_type():
    x = torch.randn(10, 2)
    for jitter in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="jitter"):
            henze_zirkler(x, jitter=jitter)
    with pytest.raises(TypeError, match="codes"):
        henze_zirkler(np.zeros((10, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.tensor(_samples("bimodal", 300, 3, 12), dtype=F64)
    hz, pv = henze_zirkler(x.cuda(), return_pvalue=True)
    assert hz.is_cuda and pv.is_cuda
    assert float(hz) == pytest.approx(float(henze_zirkler(x)), rel=1e-10)
    xc = x.float().cuda().requires_grad_()
    henze_zirkler(xc).backward()
    assert xc.grad.is_cuda and torch.isfinite(xc.grad).all()
