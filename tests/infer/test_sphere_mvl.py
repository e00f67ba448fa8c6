r"""sphere_mvl against the closed-form Riemannian score-matching integrand
J = ½‖P∇E‖² − Δ_S E for linear-plus-quadratic energies on S^n (float64, fixed seeds).

Unbiasedness is checked on the per-point difference Ĵ_ε(x, ξ) − J(x): its mean over B points
must lie within four standard errors of zero; the paper's printed chart drift (E + log|G|) must
lie far outside.
"""

import math

import pytest
import torch

from pyro_vsm.infer.mvl import sphere_mvl
from pyro_vsm.infer.mvl.sphere import _chart
from pyro_vsm.ops import stereographic_chart, stereographic_inverse

B = 20_000


class Quadratic(torch.nn.Module):
    r"""E(x) = aᵀx + ½ xᵀAx (A symmetric), with learnable a and A."""

    def __init__(self, n, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn(n + 1, generator=g, dtype=torch.float64))
        m = torch.randn(n + 1, n + 1, generator=g, dtype=torch.float64)
        self.m = torch.nn.Parameter(m)
        self.n = n

    @property
    def sym(self):
        return 0.5 * (self.m + self.m.T)

    def forward(self, x):
        return x @ self.a + 0.5 * ((x @ self.sym) * x).sum(-1)

    def riemannian_j(self, x):
        r"""½‖P∇E‖² − Δ_S E with Δ_S E = tr(P∇²E) − n xᵀ∇E."""
        a, sym = self.a, self.sym
        g = a + x @ sym
        pg = g - (g * x).sum(-1, keepdim=True) * x
        trace_p_hess = torch.trace(sym) - ((x @ sym) * x).sum(-1)
        lap = trace_p_hess - self.n * (x * g).sum(-1)
        return 0.5 * pg.pow(2).sum(-1) - lap


def sphere_points(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n + 1, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def noise(x, seed=1):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def z_score(diff):
    return (diff.mean() / (diff.std() / math.sqrt(len(diff)))).item()


@pytest.mark.parametrize("retraction", ["normalize", "exp", "chart"])
@pytest.mark.parametrize("n", [2, 5])
def test_unbiased_for_the_riemannian_objective(n, retraction):
    energy = Quadratic(n, seed=n)
    x = sphere_points(B, n)
    with torch.no_grad():
        exact = energy.riemannian_j(x)
    value = sphere_mvl(energy, x, 1e-4, retraction=retraction, noise=noise(x))
    assert value.shape == (B,)
    assert abs(z_score(value.detach() - exact)) < 4


@pytest.mark.parametrize("n", [2, 5])
def test_the_printed_chart_sign_is_biased(n):
    r"""With E + log|G| (eq. 18 as printed) the drift gains n (1 + |u|²) u, which biases Ĵ at a
    point x by b(x) = −n (1 + |u|²) u·∂_u E: measured at one point with B noise draws."""
    energy = Quadratic(n, seed=n)
    point = torch.arange(n + 1.0, 0.0, -1.0, dtype=torch.float64)
    point[-1] = -1.0  # lower hemisphere (the flipped chart), |u| close to 1
    x = (point / point.norm()).expand(B, n + 1).contiguous()
    with torch.no_grad():
        exact = energy.riemannian_j(x)
    xi = noise(x)
    with torch.enable_grad():
        printed = _chart(energy, x, 1e-4, xi, True, log_det_sign=1.0).detach()
        correct = _chart(energy, x, 1e-4, xi, True).detach()
        u0, s = stereographic_chart(x[:1])
        u = u0.requires_grad_(True)
        (grad_u,) = torch.autograd.grad(energy(stereographic_inverse(u, s)).sum(), u)
    bias = -n * (1 + u0.pow(2).sum()) * (u0 * grad_u).sum()
    assert abs(z_score(correct - exact)) < 4
    assert abs(z_score(printed - exact)) > 10
    assert abs(z_score(printed - exact - bias)) < 4


def test_circle():
    energy = Quadratic(1, seed=3)
    x = sphere_points(B, 1)
    exact = energy.riemannian_j(x).detach()
    for retraction in ("normalize", "exp", "chart"):
        value = sphere_mvl(energy, x, 1e-4, retraction=retraction, noise=noise(x)).detach()
        assert abs(z_score(value - exact)) < 4


def test_control_variate_bounds_the_variance():
    energy = Quadratic(2)
    x = sphere_points(B, 2)
    with_cv = sphere_mvl(energy, x, 1e-4, noise=noise(x)).detach()
    without = sphere_mvl(energy, x, 1e-4, noise=noise(x), control_variate=False).detach()
    assert abs(z_score(without - energy.riemannian_j(x).detach())) < 4  # same mean
    assert without.var() > 100 * with_cv.var()


def test_parameter_gradient_is_unbiased():
    r"""E[∇θ Ĵ] = ∇θ E[J]: the gradient flows through x⁻ and the control variate."""
    energy = Quadratic(2, seed=7)
    chunks = 20
    diffs = []
    for i in range(chunks):
        x = sphere_points(2000, 2, seed=100 + i)
        value = sphere_mvl(energy, x, 1e-4, noise=noise(x, seed=200 + i)).mean()
        g_hat = torch.autograd.grad(value, (energy.a, energy.m))
        g_exact = torch.autograd.grad(energy.riemannian_j(x).mean(), (energy.a, energy.m))
        diffs.append(torch.cat([(u - v).reshape(-1) for u, v in zip(g_hat, g_exact, strict=True)]))
    diffs = torch.stack(diffs)
    se = diffs.std(0) / math.sqrt(chunks)
    assert (diffs.mean(0).abs() < 4 * se + 1e-12).all()
    # detaching x⁻ (no create_graph) would give a visibly different gradient
    assert diffs.abs().mean() < 0.2 * torch.cat([g.reshape(-1) for g in g_exact]).abs().mean()


def test_float32_with_a_larger_step():
    energy = Quadratic(2).float()
    x = sphere_points(B, 2).float()
    value = sphere_mvl(energy, x, 1e-3, noise=noise(x)).detach().double()
    exact = energy.double().riemannian_j(x.double()).detach()
    diff = value - exact
    # O(eps) bias plus float32 rounding, small against the standard error
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(B) + 0.05


def test_generator_and_shapes():
    energy = Quadratic(3)
    x = sphere_points(64, 3)
    a = sphere_mvl(energy, x, 1e-3, generator=torch.Generator().manual_seed(5))
    b = sphere_mvl(energy, x, 1e-3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (64,) and a.requires_grad


def test_errors():
    energy = Quadratic(2)
    x = sphere_points(8, 2)
    for bad in (0.0, -1.0, math.inf, True, torch.tensor(0.1)):
        with pytest.raises(ValueError, match="step_size must be a positive finite number"):
            sphere_mvl(energy, x, bad)
    with pytest.raises(ValueError, match="x must lie on the unit sphere"):
        sphere_mvl(energy, 1.1 * x, 1e-3)
    with pytest.raises(ValueError, match="shape"):
        sphere_mvl(energy, x[:, :1], 1e-3)
    with pytest.raises(ValueError, match="energy must map x of shape"):
        sphere_mvl(lambda z: energy(z).sum(), x, 1e-3)
    with pytest.raises(ValueError, match="retraction must be one of"):
        sphere_mvl(energy, x, 1e-3, retraction="project")
    with pytest.raises(ValueError, match="noise must be"):
        sphere_mvl(energy, x, 1e-3, noise=torch.ones(3))
    with pytest.raises(ValueError, match="either noise or generator"):
        sphere_mvl(energy, x, 1e-3, noise=noise(x), generator=torch.Generator())
    with pytest.raises(ValueError, match="energy must be callable"):
        sphere_mvl(3, x, 1e-3)
    with pytest.raises(ValueError, match="not differentiable"):
        sphere_mvl(lambda z: torch.zeros(z.shape[0], dtype=z.dtype), x, 1e-3)


@pytest.mark.parametrize("retraction", ["normalize", "exp", "chart"])
def test_runs_on_meta(retraction):
    import pyro

    pyro.enable_validation(False)  # validation reads values back to the host
    energy = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    energy = energy.to("meta")
    x = torch.empty(16, 3, device="meta")
    value = sphere_mvl(lambda z: energy(z).squeeze(-1), x, 1e-3, retraction=retraction)
    assert value.device.type == "meta" and value.shape == (16,)
    value.sum().backward()
