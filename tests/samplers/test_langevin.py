"""Langevin, MALA, block Gibbs and Gibbs-Langevin against exact moments.

Tolerances are about four standard errors of the Monte Carlo estimate (n = 4000 chains) plus,
for the unadjusted samplers, their known O(step size) bias.
"""

import math

import pytest
import torch

from pyro_vsm.distributions import GRBMEnergy
from pyro_vsm.samplers import (
    GibbsLangevinSampler,
    LangevinSampler,
    block_gibbs,
    gibbs_langevin,
    langevin,
    mala,
)

N = 4000


class Gaussian(torch.nn.Module):
    """E(z) = ½ (z − m)ᵀ P (z − m): the target N(m, P⁻¹)."""

    def __init__(self, mean, cov):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("cov", torch.as_tensor(cov, dtype=torch.float64))
        self.register_buffer("prec", torch.linalg.inv(self.cov))
        self.event_shape = torch.Size([len(mean)])

    def forward(self, z):
        r = z - self.mean
        return 0.5 * ((r @ self.prec) * r).sum(-1)

    def ula_cov(self, eta):
        """Stationary covariance of ULA on this target: (P (I − ηP/2))⁻¹."""
        eye = torch.eye(len(self.mean), dtype=self.prec.dtype)
        return torch.linalg.inv(self.prec @ (eye - 0.5 * eta * self.prec))


def gaussian():
    return Gaussian([1.0, -0.5], [[1.0, 0.5], [0.5, 0.8]])


def moments(z):
    z = z.reshape(-1, z.shape[-1])
    return z.mean(0), torch.cov(z.T)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grbm_h1():
    """A bimodal GRBM with one hidden unit: p(z) = Σ_h π_h N(μ + W h, σ²), π_1 ≈ 0.67."""
    grbm = GRBMEnergy(2, 1, dtype=torch.float64)
    with torch.no_grad():
        grbm.mu.copy_(torch.tensor([0.2, -0.1]))
        grbm.log_sigma.copy_(torch.tensor([0.8, 0.9]).log())
        grbm.W.copy_(torch.tensor([[1.5], [-1.0]]))
        grbm.b.copy_(torch.tensor([-2.3]))
    return grbm


def exact_mixture_moments(grbm):
    log_w, means, scale = grbm.mixture_components()
    w = log_w.exp().detach()
    means = means.detach()
    mean = (w[:, None] * means).sum(0)
    second = (w[:, None, None] * means[:, :, None] * means[:, None, :]).sum(0)
    return mean, torch.diag(scale.detach() ** 2) + second - mean[:, None] * mean[None, :]


# ---------------------------------------------------------------- Gaussian target


def test_langevin_matches_gaussian_moments_up_to_its_step_size_bias():
    target = gaussian()
    eta = 0.02
    z0 = torch.randn(N, 2, dtype=torch.float64, generator=gen(1))
    z = langevin(target, z0, eta, 600, generator=gen(2))
    assert z.shape == (N, 2) and z.dtype == torch.float64 and not z.requires_grad
    mean, cov = moments(z)
    torch.testing.assert_close(mean, target.mean, atol=0.07, rtol=0)
    # ULA's own stationary covariance (bias ~ eta * lambda_max(P) / 2, here < 3%)
    torch.testing.assert_close(cov, target.ula_cov(eta), atol=0.08, rtol=0)
    torch.testing.assert_close(cov, target.cov, atol=0.1, rtol=0)


def test_mala_is_exact_where_ula_is_biased():
    target = gaussian()
    eta = 0.5  # ULA inflates the variance along P's eigenvector λ by 1/(1 − ηλ/2): ×2.8 and ×1.2
    z0 = torch.randn(N, 2, dtype=torch.float64, generator=gen(3))
    z, acc = mala(target, z0, eta, 300, generator=gen(4))
    assert acc.shape == (N,) and bool(((acc >= 0) & (acc <= 1)).all())
    assert 0.3 < float(acc.mean()) < 0.95
    mean, cov = moments(z)
    torch.testing.assert_close(mean, target.mean, atol=0.07, rtol=0)
    torch.testing.assert_close(cov, target.cov, atol=0.08, rtol=0)
    z_ula = langevin(target, z0, eta, 300, generator=gen(4))
    _, cov_ula = moments(z_ula)
    torch.testing.assert_close(cov_ula, target.ula_cov(eta), atol=0.12, rtol=0)
    assert float((cov_ula - target.cov).abs().max()) > 0.3


def test_langevin_uses_per_sample_gradients_and_batched_chains():
    target = gaussian()
    z0 = torch.randn(3, 5, 2, dtype=torch.float64, generator=gen(0))
    z1 = langevin(target, z0, 0.1, 1, generator=gen(7))
    xi = torch.randn(3, 5, 2, dtype=torch.float64, generator=gen(7))
    grad = (z0 - target.mean) @ target.prec  # per chain: not divided by the number of chains
    torch.testing.assert_close(z1, z0 - 0.1 * grad + math.sqrt(0.2) * xi, rtol=0, atol=1e-12)
    # chains shaped (..., d) and a per-dimension step size
    z, acc = mala(target, z0, torch.tensor([0.1, 0.05]), 5, generator=gen(8))
    assert z.shape == (3, 5, 2) and acc.shape == (3, 5)


def test_samplers_leave_energy_gradients_alone_and_work_without_grad_mode():
    grbm = grbm_h1()
    z0 = torch.zeros(10, 2, dtype=torch.float64)
    with torch.no_grad():
        z = langevin(grbm, z0, 0.05, 3)
        z2, _ = mala(grbm, z0, 0.05, 3)
    assert not z.requires_grad and not z2.requires_grad
    assert all(p.grad is None for p in grbm.parameters())


def test_mala_rejects_non_finite_proposals():
    def half_line(z):  # N(0, 1) restricted to z > 0
        return torch.where(
            z[..., 0] > 0, 0.5 * z[..., 0] ** 2, torch.full_like(z[..., 0], math.inf)
        )

    z, _ = mala(half_line, torch.full((500, 1), 0.5), 0.5, 50, generator=gen(0))
    assert bool((z > 0).all()) and bool(torch.isfinite(z).all())


# ---------------------------------------------------------------- GRBM (H = 1) target


def test_grbm_h1_exact_moments_agree_with_quadrature():
    grbm = grbm_h1()
    mean, cov = exact_mixture_moments(grbm)
    x = torch.linspace(-10.0, 10.0, 801, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        w = torch.softmax(-grbm(grid), 0)
    q_mean = (w[:, None] * grid).sum(0)
    q_cov = (w[:, None, None] * (grid - q_mean)[:, :, None] * (grid - q_mean)[:, None, :]).sum(0)
    torch.testing.assert_close(mean, q_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(cov, q_cov, atol=1e-8, rtol=0)
    assert 0.6 < float(grbm.mixture_components()[0].exp()[1].detach()) < 0.75


@pytest.mark.parametrize(
    "sampler", ["block_gibbs", "gibbs_langevin", "gibbs_langevin_unadjusted", "mala", "langevin"]
)
def test_grbm_samplers_match_the_exact_mixture_moments(sampler):
    grbm = grbm_h1()
    mean, cov = exact_mixture_moments(grbm)
    z0 = torch.randn(N, 2, dtype=torch.float64, generator=gen(11))
    g = gen(12)
    atol_mean, atol_cov = 0.08, 0.1
    if sampler == "block_gibbs":
        z, h = block_gibbs(grbm, z0, 50, generator=g, return_hidden=True)
        assert h.shape == (N, 1)
        # the fraction of h = 1 estimates the mixture weight
        assert abs(float(h.mean()) - float(grbm.mixture_components()[0].exp()[1].detach())) < 0.04
    elif sampler == "gibbs_langevin":
        z, info = gibbs_langevin(grbm, z0, 50, langevin_steps=5, generator=g, return_info=True)
        assert info["hidden"].shape == (N, 1) and info["acceptance_rate"].shape == (N,)
        assert 0.5 < float(info["acceptance_rate"].mean()) <= 1.0
    elif sampler == "gibbs_langevin_unadjusted":
        # small steps: the unadjusted chain's bias, ≈ η/(2σ²) of σ², stays within tolerance
        z = gibbs_langevin(
            grbm, z0, 40, step_size=0.03, langevin_steps=10, adjust=False, generator=g
        )
        atol_cov = 0.12
    elif sampler == "mala":
        z, acc = mala(grbm, z0, 0.3, 300, generator=g)
        assert float(acc.mean()) > 0.5
    else:
        z = langevin(grbm, z0, 0.02, 600, generator=g)
        atol_cov = 0.12  # ULA bias of a few percent
    assert z.shape == (N, 2) and not z.requires_grad
    z_mean, z_cov = moments(z)
    torch.testing.assert_close(z_mean, mean, atol=atol_mean, rtol=0)
    torch.testing.assert_close(z_cov, cov, atol=atol_cov, rtol=0)


def test_gibbs_langevin_mh_ratio_is_exact_for_a_large_step():
    # η close to 2σ²: the Langevin steps alone are very wrong (variance ×~20), the MH step fixes it
    grbm = grbm_h1()
    mean, cov = exact_mixture_moments(grbm)
    z0 = torch.randn(N, 2, dtype=torch.float64, generator=gen(5))
    eta = 1.9 * grbm.variance.detach()
    z, info = gibbs_langevin(
        grbm, z0, 150, step_size=eta, langevin_steps=3, generator=gen(6), return_info=True
    )
    assert float(info["acceptance_rate"].mean()) < 0.5
    z_mean, z_cov = moments(z)
    torch.testing.assert_close(z_mean, mean, atol=0.08, rtol=0)
    torch.testing.assert_close(z_cov, cov, atol=0.12, rtol=0)


# ---------------------------------------------------------------- objects, dtypes, errors


def test_sampler_objects():
    target = gaussian()
    s = LangevinSampler(0.1, 20, adjusted=True, init_loc=1.0, generator=gen(0))
    z = s(target, (50, 2))
    assert z.shape == (50, 2) and z.dtype == torch.float64 and s.acceptance_rate is not None
    grbm = grbm_h1()
    z = GibbsLangevinSampler(5, generator=gen(1))(grbm, (4, 3, 2))
    assert z.shape == (4, 3, 2)
    with pytest.raises(ValueError, match="step_size"):
        LangevinSampler(-0.1, 10)
    with pytest.raises(ValueError, match="num_steps"):
        GibbsLangevinSampler(0)


@pytest.mark.parametrize("device", ["meta"] + (["cuda"] if torch.cuda.is_available() else []))
def test_samplers_run_on_the_device_of_z0(device):
    # on "meta" any tensor created without device= would mix a CPU tensor in and raise
    grbm = GRBMEnergy(2, 3).to(device)
    z0 = torch.zeros(8, 2, device=device)
    for z in [
        langevin(grbm, z0, 0.1, 2),
        mala(grbm, z0, 0.1, 2)[0],
        block_gibbs(grbm, z0, 2),
        gibbs_langevin(grbm, z0, 2, langevin_steps=2),
        gibbs_langevin(grbm, z0, 2, langevin_steps=2, adjust=False),
    ]:
        assert z.shape == (8, 2) and z.device == z0.device


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samplers_follow_the_dtype_of_z0(dtype):
    grbm = GRBMEnergy(2, 3).to(dtype)
    z0 = torch.zeros(8, 2, dtype=dtype)
    for z in [langevin(grbm, z0, 0.1, 2), mala(grbm, z0, 0.1, 2)[0], gibbs_langevin(grbm, z0, 2)]:
        assert z.dtype == dtype


def test_sampler_errors_name_the_argument():
    target = gaussian()
    z0 = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="z0"):
        langevin(target, [0.0, 0.0], 0.1, 5)
    with pytest.raises(ValueError, match="z0"):
        mala(target, torch.zeros(4, 2, dtype=torch.long), 0.1, 5)
    with pytest.raises(ValueError, match="step_size"):
        langevin(target, z0, 0.0, 5)
    with pytest.raises(ValueError, match="step_size"):
        mala(target, z0, torch.tensor([0.1, -0.1]), 5)
    with pytest.raises(ValueError, match="num_steps"):
        langevin(target, z0, 0.1, 0)
    with pytest.raises(ValueError, match="num_steps"):
        mala(target, z0, 0.1, 2.5)
    with pytest.raises(ValueError, match="energy returned"):
        langevin(lambda z: z.pow(2), z0, 0.1, 1)
    grbm = grbm_h1()
    with pytest.raises(ValueError, match="z0 must have shape"):
        gibbs_langevin(grbm, torch.zeros(4, 3, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="z must have shape"):
        langevin(grbm, torch.zeros(4, 3, dtype=torch.float64), 0.1, 2)
    with pytest.raises(ValueError, match="grbm"):
        block_gibbs(target, z0, 2)
    with pytest.raises(ValueError, match="step_size"):
        gibbs_langevin(grbm, z0, 2, step_size=2.5 * grbm.variance.detach())
    with pytest.raises(ValueError, match="step_size must broadcast"):
        gibbs_langevin(grbm, z0, 2, step_size=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="langevin_steps"):
        gibbs_langevin(grbm, z0, 2, langevin_steps=0)
