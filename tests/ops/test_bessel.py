r"""Log-space modified Bessel functions against SciPy (AMOS)."""

import math

import numpy as np
import pytest
import torch
from scipy import special

from pyro_vsm.ops import bessel_iv_ratio, log_bessel_iv, log_bessel_iv_div_pow

X = np.logspace(-6, 4, 801)
ORDERS = [p / 2 - 1 for p in (2, 3, 4, 5, 10, 20, 21, 22, 50, 101, 500)]


def reference(nu, x):
    r"""(log(I_nu(x) / x^nu), I_{nu+1}(x) / I_nu(x)) from SciPy where ive does not underflow."""
    with np.errstate(all="ignore"):
        ive, ive1 = special.ive(nu, x), special.ive(nu + 1, x)
        ok = (ive > 1e-290) & (ive1 > 1e-290)
        return np.log(ive) + x - nu * np.log(x), ive1 / ive, ok


@pytest.mark.parametrize("nu", ORDERS)
def test_against_scipy_float64(nu):
    x = torch.tensor(X, dtype=torch.float64)
    f_ref, r_ref, ok = reference(nu, X)
    f = log_bessel_iv_div_pow(nu, x).numpy()
    r = bessel_iv_ratio(nu, x).numpy()
    assert ok.mean() > 0.25
    assert np.max(np.abs(f - f_ref)[ok] / np.maximum(1, np.abs(f_ref[ok]))) < 1e-12
    assert np.max(np.abs(r - r_ref)[ok] / r_ref[ok]) < 1e-10
    log_iv = log_bessel_iv(nu, x).numpy()
    assert np.allclose(log_iv[ok], (f_ref + nu * np.log(X))[ok], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nu", [0.0, 1.5, 9.5, 24.0])
def test_float32_is_correctly_rounded(nu):
    x = torch.tensor(X, dtype=torch.float32)
    xs = x.double().numpy()  # the float32 inputs, exactly
    f_ref, r_ref, ok = reference(nu, xs)
    f = log_bessel_iv_div_pow(nu, x)
    r = bessel_iv_ratio(nu, x)
    assert f.dtype == r.dtype == torch.float32
    assert np.max(np.abs(f.double().numpy() - f_ref)[ok] / np.maximum(1, np.abs(f_ref[ok]))) < 3e-7
    assert np.max(np.abs(r.double().numpy() - r_ref)[ok] / r_ref[ok]) < 3e-7


@pytest.mark.parametrize("nu", [0.0, 0.5, 4.0, 9.5, 10.0, 24.0])
def test_derivatives(nu):
    x = torch.tensor([1e-6, 0.5, 3.0, 29.9, 30.1, 100.0, 1e4], dtype=torch.float64)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(log_bessel_iv_div_pow(nu, x).sum(), x)
    assert torch.allclose(g, bessel_iv_ratio(nu, x.detach()), rtol=1e-12)
    assert torch.autograd.gradgradcheck(lambda t: log_bessel_iv_div_pow(nu, t), (x,))


def test_zero_argument():
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for nu in (0.0, 0.5, 12.0):
        f = log_bessel_iv_div_pow(nu, zero)
        assert torch.allclose(f, torch.full_like(f, -nu * math.log(2) - math.lgamma(nu + 1)))
        (g,) = torch.autograd.grad(f.sum(), zero)
        assert torch.equal(g, torch.zeros_like(g))
    assert log_bessel_iv(0.0, zero.detach()).eq(0).all()


def test_bad_order():
    x = torch.ones(2)
    for bad in (-1.0, True, math.inf, "1"):
        with pytest.raises(ValueError, match="order"):
            log_bessel_iv_div_pow(bad, x)
    with pytest.raises(ValueError, match="floating-point"):
        bessel_iv_ratio(1.0, torch.ones(2, dtype=torch.long))


def test_meta_device():
    x = torch.empty(5, device="meta")
    assert log_bessel_iv_div_pow(3.0, x).device.type == "meta"
    assert bessel_iv_ratio(30.0, x).device.type == "meta"
