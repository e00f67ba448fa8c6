"""Tests of the LiBI synthetic data sets in :mod:`pyro_vsm.datasets.libi`.

Constants are checked against Yacoby, Pan & Doshi-Velez, eq. 3 and Appendix E; statistical
tolerances are stated next to each check (in standard errors for the sample sizes used).
"""

import numpy as np
import pytest
import torch

from pyro_vsm.datasets import (
    LIBI_DATASETS,
    LiBIData,
    cubic_jte,
    gaussian,
    linear_jte,
    mobius,
    mobius_transform,
)
from pyro_vsm.evaluation import henze_zirkler

F64 = torch.float64
X_DIM = {"linear_jte": 2, "cubic_jte": 2, "gaussian": 4, "mobius": 2}
NAMES = sorted(LIBI_DATASETS)

# the paper's constants, typed in again from the text
PAPER_A = np.array([[0.75, 0.25], [1.5, -1.0]])
PAPER_B = np.diag([0.006, 0.006])
PAPER_SIGMA2 = 0.01
PAPER_GAUSSIAN_A = np.array([[-0.7074, 0.0995, 0.0286, 0.1240], [0.7074, 0.9948, -0.9995, 0.9920]])


@pytest.fixture(scope="module")
def big():
    """Large float64 draws shared by the statistical checks."""
    return {name: LIBI_DATASETS[name](50_000, seed=123, dtype=F64) for name in NAMES}


def _cov(x):
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0)
    return xc.T @ xc / (len(x) - 1)


def test_registry():
    assert set(LIBI_DATASETS) == {"linear_jte", "cubic_jte", "gaussian", "mobius"}
    assert LIBI_DATASETS["linear_jte"] is linear_jte and LIBI_DATASETS["mobius"] is mobius
    assert LIBI_DATASETS["cubic_jte"] is cubic_jte and LIBI_DATASETS["gaussian"] is gaussian


@pytest.mark.parametrize("name", NAMES)
def test_shapes_determinism_and_dtypes(name):
    make = LIBI_DATASETS[name]
    a, b, c = make(300, seed=1), make(300, seed=1), make(300, seed=2)
    assert isinstance(a, LiBIData) and a.description
    assert a.x.shape == (300, X_DIM[name]) and a.z.shape == (300, 2)
    assert a.x.dtype == a.z.dtype == torch.float32 and a.x.device.type == "cpu"
    assert torch.isfinite(a.x).all() and torch.isfinite(a.z).all()
    assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.z, c.z)
    # the same draws in float64, rounded once to float32
    d = make(300, seed=1, dtype=F64, device="cpu")
    assert d.x.dtype == d.z.dtype == F64
    assert torch.equal(d.x.float(), a.x) and torch.equal(d.z.float(), a.z)
    for value in d.params.values():
        if isinstance(value, torch.Tensor):
            assert value.dtype == F64
    assert d.params["noise_cov"].shape == (X_DIM[name], X_DIM[name])
    # small n is deterministic too
    assert torch.equal(make(7, seed=5).x, make(7, seed=5).x)


@pytest.mark.parametrize("name", NAMES)
def test_mean_fn_dtype_and_grad(name):
    data = LIBI_DATASETS[name](50, seed=0)
    assert (
        data.mean_fn(data.z).shape == data.x.shape and data.mean_fn(data.z).dtype == torch.float32
    )
    z = data.z.double().requires_grad_()
    out = data.mean_fn(z)
    assert out.dtype == F64
    out.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_latents_are_standard_normal(name, big):
    z = big[name].z.numpy()
    # n = 50000: standard error 0.0045 for the means, 0.0063 for the variances
    assert np.abs(z.mean(0)).max() < 0.025
    assert np.abs(_cov(z) - np.eye(2)).max() < 0.035
    hz, pv = henze_zirkler(big[name].z[:1000], return_pvalue=True)
    assert float(pv) > 0.01


@pytest.mark.parametrize("name", NAMES)
def test_residuals_match_noise(name, big):
    # x - mean_fn(z) must be N(0, noise_cov): the returned parameters reproduce the process
    data = big[name]
    r = (data.x - data.mean_fn(data.z)).numpy()
    noise_cov = data.params["noise_cov"].numpy()
    sd = np.sqrt(np.diag(noise_cov))
    n = len(r)
    assert np.all(np.abs(r.mean(0)) < 5 * sd / np.sqrt(n))
    emp = _cov(r)
    # relative standard error of a variance is sqrt(2/n) = 0.0063; off-diagonal correlations 0.0045
    np.testing.assert_allclose(np.diag(emp), np.diag(noise_cov), rtol=0.035)
    corr = emp / np.outer(np.sqrt(np.diag(emp)), np.sqrt(np.diag(emp)))
    assert np.abs(corr - np.eye(len(sd))).max() < 0.025


def test_linear_jte_parameters_and_marginal(big):
    data = big["linear_jte"]
    p = data.params
    np.testing.assert_array_equal(p["A"].numpy(), PAPER_A)
    np.testing.assert_array_equal(p["B"].numpy(), PAPER_B)
    assert p["sigma2"] == PAPER_SIGMA2
    L = p["L"].numpy()
    assert L[0, 1] == 0 and np.all(np.diag(L) > 0)
    np.testing.assert_allclose(L @ L.T, PAPER_A @ PAPER_A.T + PAPER_B, rtol=1e-12)
    np.testing.assert_allclose(
        p["noise_cov"].numpy(), PAPER_SIGMA2 * np.eye(2) - PAPER_B, rtol=1e-12
    )
    # eq. 3: x ~ N(0, A A^T + sigma2 I) = [[0.635, 0.875], [0.875, 3.26]]
    target = PAPER_A @ PAPER_A.T + PAPER_SIGMA2 * np.eye(2)
    np.testing.assert_allclose(target, [[0.635, 0.875], [0.875, 3.26]], rtol=1e-12)
    x = data.x.numpy()
    n = len(x)
    # standard error of a covariance entry: sqrt((S_ii S_jj + S_ij^2) / n); allow 5 of them
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / n)
    assert np.all(np.abs(_cov(x) - target) < 5 * se)
    assert np.all(np.abs(x.mean(0)) < 5 * np.sqrt(np.diag(target) / n))
    # cross-covariance E[x z^T] = L (eq. 20)
    assert np.abs(x.T @ data.z.numpy() / n - L).max() < 0.05


def test_linear_jte_overrides():
    # Section 1, Case 1: B ranges over diagonal matrices in [0, sigma2]; the marginal is unchanged
    for B in (np.diag([0.0, 0.01]), np.diag([0.01, 0.0])):
        data = linear_jte(40_000, seed=3, B=B, dtype=F64)
        np.testing.assert_allclose(data.params["noise_cov"].numpy(), 0.01 * np.eye(2) - B)
        target = PAPER_A @ PAPER_A.T + 0.01 * np.eye(2)
        assert np.abs(_cov(data.x.numpy()) - target).max() < 0.1
    with pytest.raises(ValueError, match="B must be diagonal"):
        linear_jte(10, B=np.array([[0.005, 0.001], [0.001, 0.005]]))
    with pytest.raises(ValueError, match="B must be diagonal"):
        linear_jte(10, B=np.diag([0.02, 0.0]))
    with pytest.raises(ValueError, match="A must be"):
        linear_jte(10, A=np.ones(3))
    with pytest.raises(ValueError, match="sigma2"):
        linear_jte(10, sigma2=-1.0)


def test_cubic_jte_moments(big):
    data = big["cubic_jte"]
    L = data.params["L"].numpy()
    np.testing.assert_allclose(L @ L.T, PAPER_A @ PAPER_A.T + PAPER_B, rtol=1e-12)
    np.testing.assert_allclose(data.params["noise_cov"].numpy(), 0.004 * np.eye(2), rtol=1e-12)
    # h = L z ~ N(0, S); Cov(h_i^3, h_j^3) = 9 S_ii S_jj S_ij + 6 S_ij^3; plus the noise
    S = PAPER_A @ PAPER_A.T + PAPER_B
    target = 9 * np.outer(np.diag(S), np.diag(S)) * S + 6 * S**3 + 0.004 * np.eye(2)
    # heavy tails (12th moments of h): the relative standard error is below 1% at n = 50000
    np.testing.assert_allclose(_cov(data.x.numpy()), target, rtol=0.05)
    x = data.x.numpy()
    h = data.z.numpy() @ L.T
    assert np.abs(x - h**3).max() < 6 * np.sqrt(0.004)


def test_gaussian_parameters_and_marginal(big):
    data = big["gaussian"]
    A = data.params["A"].numpy()
    np.testing.assert_array_equal(A, PAPER_GAUSSIAN_A)
    assert data.params["noise_var"] == 1e-6
    np.testing.assert_allclose(data.params["noise_cov"].numpy(), 1e-6 * np.eye(4))
    target = A.T @ A + 1e-6 * np.eye(4)
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / len(data.x))
    assert np.all(np.abs(_cov(data.x.numpy()) - target) < 5 * se)
    # rank 2 plus tiny noise: the two smallest eigenvalues of Cov(x) are ~1e-6
    eig = np.linalg.eigvalsh(_cov(data.x.numpy()))
    assert eig[1] < 2e-6 and eig[2] > 0.1


def test_mobius_transform_closed_form(big):
    data = big["mobius"]
    for key, value in {"a": (1, 0), "b": (1, 4), "c": (1, 0), "d": (7, 4)}.items():
        np.testing.assert_array_equal(data.params[key].numpy(), value)
    assert data.params["sigma2"] == 1e-5
    np.testing.assert_allclose(data.params["noise_cov"].numpy(), 1e-5 * np.eye(2))
    # m(0) = b/d = (1+4i)/(7+4i) = (23 + 24i)/65
    zero = mobius_transform(torch.zeros(2, dtype=F64))
    np.testing.assert_allclose(zero.numpy(), [23 / 65, 24 / 65], rtol=1e-15)
    # against Python complex arithmetic, with non-default coefficients too
    z = data.z[:20].numpy()
    for a, b, c, d in (((1, 0), (1, 4), (1, 0), (7, 4)), ((0.5, -2), (1, 0), (0.3, 0.1), (2, -1))):
        got = mobius_transform(torch.tensor(z), a, b, c, d).numpy()
        ca, cb, cc, cd = (complex(*v) for v in (a, b, c, d))
        want = [(ca * complex(*zi) + cb) / (cc * complex(*zi) + cd) for zi in z]
        np.testing.assert_allclose(got, [[w.real, w.imag] for w in want], rtol=1e-12)
    # the data are m(z) + N(0, 1e-5 I) with the paper's m; the residual sd is 0.0032, so 6 sd
    # bounds every one of the 50000 draws (P(|N(0,1)| > 6) = 2e-9)
    want = np.array([(complex(*zi) + (1 + 4j)) / (complex(*zi) + (7 + 4j)) for zi in z])
    np.testing.assert_allclose(data.x[:20].numpy(), np.stack([want.real, want.imag], -1), atol=0.02)
    assert np.abs((data.x - mobius_transform(data.z)).numpy()).max() < 6 * np.sqrt(1e-5)
    with pytest.raises(ValueError, match="z must be"):
        mobius_transform(torch.zeros(3))


def test_non_normal_observations(big):
    # sanity: the nonlinear data sets are far from Gaussian, the linear ones are Gaussian
    pv = {name: float(henze_zirkler(big[name].x[:1000], return_pvalue=True)[1]) for name in NAMES}
    assert pv["linear_jte"] > 0.01 and pv["gaussian"] > 0.01
    assert pv["cubic_jte"] < 1e-6 and pv["mobius"] < 1e-6


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_n(name, n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        LIBI_DATASETS[name](n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda(name):
    a, b = LIBI_DATASETS[name](100, seed=0, device="cuda"), LIBI_DATASETS[name](100, seed=0)
    assert a.x.is_cuda and a.z.is_cuda and a.params["noise_cov"].is_cuda
    assert torch.equal(a.x.cpu(), b.x)
    assert torch.allclose(a.mean_fn(a.z).cpu(), b.mean_fn(b.z), atol=1e-5)
