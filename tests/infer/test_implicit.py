"""ImplicitELBO / ImplicitWAELoss / MMDWAELoss: the encoder's gradient is the true entropy
gradient when the energy is the exact -log q of a known guide (a Gaussian and a vMF treated as
implicit), the energy follows MVL, sphere models train, routing/state details, bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule, PyroParam
from pyro.optim import Adam
from torch import nn

from pyro_vsm import ImplicitELBO, ImplicitWAELoss, MMDWAELoss
from pyro_vsm.distributions import (
    ConditionalQuadraticFormEnergy,
    HypersphericalUniform,
    VonMisesFisher,
)
from pyro_vsm.guides import DiagonalNormalEncoder, ImplicitEncoder, VonMisesFisherEncoder
from pyro_vsm.models import EuclideanVAE, SphericalVAE

D64 = torch.float64


def _zscore_check(samples, exact):
    """Every coordinate of the mean of ``samples`` ([K, ...]) within 4 s.e. of ``exact``."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((mean - exact).abs() <= 4 * se + 1e-10).all(), (mean, exact, se)


# ------------------------------------------------------------------------------------------------
# a Gaussian treated as implicit: z = A x + c + B eps (ImplicitEncoder with a linear network)
# ------------------------------------------------------------------------------------------------
DX, DZ, N = 3, 2, 4


class GaussianGuideEnergy(nn.Module):
    """E(z, x) = -log N(z; A x + c, B Bᵀ), read (detached) from the linear guide: the exact
    negative log-density of the implicit guide, with no trainable parameters of its own."""

    def __init__(self, guide):
        super().__init__()
        self.guide = [guide]  # not a submodule: its parameters are not the energy's

    def forward(self, z, x):
        lin = self.guide[0].network
        w, c = lin.weight.detach(), lin.bias.detach()
        a, b = w[:, :DX], w[:, DX:]
        r = torch.linalg.solve(b, (z - x @ a.T - c).unsqueeze(-1)).squeeze(-1)
        logdet = torch.linalg.slogdet(b).logabsdet
        return 0.5 * r.pow(2).sum(-1) + logdet + 0.5 * DZ * math.log(2 * math.pi)


def _linear_gaussian_setup():
    torch.manual_seed(0)
    guide = ImplicitEncoder(nn.Linear(DX + DZ, DZ), DZ, noise_dim=DZ, manifold=None).double()
    with torch.no_grad():
        guide.network.weight[:, DX:] = torch.tensor([[1.2, 0.3], [-0.2, 0.7]], dtype=D64)
    w_lik = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.3, -0.4]], dtype=D64)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(DZ, dtype=D64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w_lik.T, 1.0).to_event(1), obs=x)

    x = torch.randn(N, DX, dtype=D64)
    return model, guide, w_lik, x


def test_gaussian_implicit_encoder_gradient_is_the_exact_elbo_gradient():
    """E_q[∇_φ loss] = -∇_φ ELBO in closed form; the entropy part is ∇_B log|det B| = B^{-T}."""
    pyro.clear_param_store()
    model, guide, w_lik, x = _linear_gaussian_setup()
    lin = guide.network
    a, b, c = lin.weight[:, :DX].detach(), lin.weight[:, DX:].detach(), lin.bias.detach()
    m = x @ a.T + c  # [N, DZ]
    resid = m + (m @ w_lik.T - x) @ w_lik  # d/dm of -log p(x, z) at the mean, per point
    exact_b = -N * (torch.linalg.inv(b).T - b - w_lik.T @ w_lik @ b)
    exact_a = resid.T @ x
    exact_c = resid.sum(0)
    loss = ImplicitELBO(
        GaussianGuideEnergy(guide),
        num_particles=100,
        vectorize_particles=True,
        max_plate_nesting=1,
    )
    pyro.set_rng_seed(1)
    grads = []
    for _ in range(40):
        lin.zero_grad()
        loss.loss_and_grads(model, guide, x)
        grads.append(torch.cat([lin.weight.grad.reshape(-1), lin.bias.grad]))
    grads = torch.stack(grads)
    exact = torch.cat([torch.cat([exact_a, exact_b], 1).reshape(-1), exact_c])
    _zscore_check(grads, exact)
    # and not the gradient without the entropy term (the test can fail)
    no_entropy_b = -N * (-b - w_lik.T @ w_lik @ b)
    without = torch.cat([torch.cat([exact_a, no_entropy_b], 1).reshape(-1), exact_c])
    se = grads.std(0) / math.sqrt(grads.shape[0])
    assert ((grads.mean(0) - without).abs() > 10 * se).any()


def test_gaussian_implicit_per_sample_gradient_matches_sticking_the_landing():
    """Per draw, the encoder's gradient is that of -[log p(x, z) - log q_φ̄(z|x)] with the
    guide's parameters frozen inside log q (the path derivative of Roeder et al.)."""
    pyro.clear_param_store()
    model, guide, w_lik, x = _linear_gaussian_setup()
    loss = ImplicitELBO(GaussianGuideEnergy(guide), max_plate_nesting=1)
    pyro.set_rng_seed(3)
    loss.loss_and_grads(model, guide, x)
    got = [p.grad.clone() for p in guide.parameters()]
    for p in guide.parameters():
        p.grad = None
    pyro.set_rng_seed(3)
    z = guide.sample(x)  # the same noise
    log_joint = (
        dist.Normal(0.0, 1.0).log_prob(z).sum() + dist.Normal(z @ w_lik.T, 1.0).log_prob(x).sum()
    )
    (-(log_joint + GaussianGuideEnergy(guide)(z, x).sum())).backward()
    for g, p in zip(got, guide.parameters(), strict=True):
        assert torch.allclose(g, p.grad, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# a vMF on S² treated as implicit: the exact inverse-CDF reparametrisation (no rejection)
# ------------------------------------------------------------------------------------------------
class ExactVMFGuide(PyroModule):
    """z = w μ + √(1 - w²) v with w = 1 + log(u + (1 - u) e^{-2κ})/κ (the exact inverse CDF on
    S²) and v uniform on μ⊥: a pushforward of noise independent of (μ, κ), emitted as a Delta."""

    def __init__(self):
        super().__init__()
        self.loc_raw = PyroParam(torch.tensor([0.3, -1.0, 0.5], dtype=D64))
        self.log_kappa = PyroParam(torch.tensor(math.log(3.0), dtype=D64))

    def params(self):
        return nn.functional.normalize(self.loc_raw, dim=-1), self.log_kappa.exp()

    def forward(self, x):
        mu, kappa = self.params()
        with pyro.plate("data", x.shape[0]):
            shape = (x.shape[0],)
            u = torch.rand(shape, dtype=D64)
            g = torch.randn(shape + (3,), dtype=D64)
            w = 1 + torch.log(u + (1 - u) * torch.exp(-2 * kappa)) / kappa
            v = nn.functional.normalize(g - (g @ mu).unsqueeze(-1) * mu, dim=-1)
            z = w.unsqueeze(-1) * mu + (1 - w * w).clamp_min(0).sqrt().unsqueeze(-1) * v
            z = nn.functional.normalize(z, dim=-1)  # rounding only
            pyro.sample("z", dist.Delta(z, event_dim=1))


class VMFGuideEnergy(nn.Module):
    """E(z, x) = -log vMF(z; μ̄, κ̄), the guide's exact negative log-density (detached)."""

    def __init__(self, guide):
        super().__init__()
        self.guide = [guide]

    def forward(self, z, x):
        mu, kappa = (t.detach() for t in self.guide[0].params())
        return -VonMisesFisher(mu, kappa).log_prob(z)


def _uniform_prior_model(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", HypersphericalUniform(2, dtype=D64))
        pyro.sample("x", dist.Normal(torch.zeros(1, dtype=D64), 1.0).to_event(1), obs=x)


def test_vmf_implicit_encoder_gradient_is_the_exact_entropy_gradient():
    """With a uniform prior and a likelihood free of z, -ELBO = -N H[q] + const: the expected
    gradient is -N ∂H/∂log κ (H from the vMF's closed-form entropy) and 0 for μ."""
    pyro.clear_param_store()
    guide = ExactVMFGuide()
    n = 512
    x = torch.zeros(n, 1, dtype=D64)
    loss = ImplicitELBO(VMFGuideEnergy(guide), manifold="sphere", max_plate_nesting=1)
    log_kappa = guide.log_kappa.detach().requires_grad_(True)
    entropy = VonMisesFisher(guide.params()[0].detach(), log_kappa.exp()).entropy()
    (d_entropy,) = torch.autograd.grad(entropy, log_kappa)
    pyro.set_rng_seed(2)
    grads = []
    for _ in range(40):
        for p in guide.parameters():
            p.grad = None
        loss.loss_and_grads(_uniform_prior_model, guide, x)
        grads.append(
            torch.cat(
                [guide.loc_raw_unconstrained.grad, guide.log_kappa_unconstrained.grad.reshape(1)]
            )
        )
    grads = torch.stack(grads)
    exact = torch.cat([torch.zeros(3, dtype=D64), (-n * d_entropy).reshape(1)])
    _zscore_check(grads, exact)
    assert grads[:, 3].mean() > 0.5 * float(-n * d_entropy)  # a clearly non-zero signal


# ------------------------------------------------------------------------------------------------
# the energy follows the guide: MVL recovers the conditional score of a fixed implicit guide
# ------------------------------------------------------------------------------------------------
def test_conditional_energy_learns_the_score_of_a_fixed_gaussian_guide():
    pyro.clear_param_store()
    model, guide, _, _ = _linear_gaussian_setup()
    torch.manual_seed(4)
    x = torch.randn(64, DX, dtype=D64)
    energy = ConditionalQuadraticFormEnergy(DZ, DX, hidden=(32,), dtype=D64)
    loss = ImplicitELBO(energy, max_plate_nesting=1, energy_penalty=0.0)
    svi = SVI(
        model,
        guide,
        Adam(lambda name: {"lr": 1e-2 if name.startswith("conditional_energy") else 0.0}),
        loss=loss,
    )
    for _ in range(150):
        svi.step(x)
    exact = GaussianGuideEnergy(guide)
    z = guide.sample(x).detach().requires_grad_(True)
    (fitted,) = torch.autograd.grad(energy(z, x).sum(), z)
    (truth,) = torch.autograd.grad(exact(z, x).sum(), z)
    error = (fitted - truth).pow(2).sum(-1).mean() / truth.pow(2).sum(-1).mean()
    assert error < 0.1, error
    assert "conditional_energy$$$h.0.weight" in pyro.get_param_store()


# ------------------------------------------------------------------------------------------------
# hyperspherical and Euclidean models train with every loss; routing and state
# ------------------------------------------------------------------------------------------------
def _digits_like(n=16, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.4).to(D64)


@pytest.mark.parametrize("manifold", ["sphere", None])
@pytest.mark.parametrize("kind", ["vae", "wae", "mmd"])
def test_models_train_with_the_implicit_losses(manifold, kind):
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = _digits_like()
    vae = SphericalVAE if manifold else EuclideanVAE
    model = vae.mlp(6, 2, hidden=(8,)).double()
    guide = ImplicitEncoder.mlp(
        6, 2, noise_dim=0 if kind != "vae" else 3, hidden=(8,), manifold=manifold
    ).double()
    if kind == "vae":
        loss = ImplicitELBO(manifold=manifold, updates="alternating")
    elif kind == "wae":
        loss = ImplicitWAELoss(manifold=manifold)
    else:
        loss = MMDWAELoss(10.0)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=loss)
    values = [svi.step(x, 100) for _ in range(6)]
    assert all(math.isfinite(v) for v in values)
    if kind != "mmd":
        assert loss.energy is not None and loss.energy.input_scale == (
            math.sqrt(3) if manifold else 1.0
        )
        state = loss.state_dict()
        key = "conditional_energy" if kind == "vae" else "marginal_energy"
        assert set(state["modules"]) == {key}
        other = type(loss)(manifold=manifold, updates=loss.updates)
        other.prepare(model, guide, x, 100)
        other.load_state_dict(state)
        for a, b in zip(other.energy.parameters(), loss.energy.parameters(), strict=True):
            assert torch.equal(a, b)
        assert other.step == 6
    assert math.isfinite(svi.evaluate_loss(x, 100))


def test_alternating_updates_move_one_group_per_step():
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = _digits_like()
    model = SphericalVAE.mlp(6, 2, hidden=(8,)).double()
    guide = ImplicitEncoder.mlp(6, 2, noise_dim=3, hidden=(8,)).double()
    loss = ImplicitELBO(manifold="sphere", updates="alternating")
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=loss)
    svi.step(x)  # builds the energy
    assert loss.phase == "energy"
    ae = [p.detach().clone() for p in list(model.parameters()) + list(guide.parameters())]
    svi.step(x)
    after = list(model.parameters()) + list(guide.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ae, after, strict=True))
    assert loss.phase == "autoencoder"
    energy = [p.detach().clone() for p in loss.energy.parameters()]
    svi.step(x)
    assert all(torch.equal(a, b) for a, b in zip(energy, loss.energy.parameters(), strict=True))
    assert set(loss.last_terms) >= {"neg_elbo", "energy", "score_matching", "energy_penalty"}


def test_explicit_models_train_with_trace_elbo():
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = _digits_like()
    for model, guide in [
        (SphericalVAE.mlp(6, 2, hidden=(8,)), VonMisesFisherEncoder.mlp(6, 2, hidden=(8,))),
        (EuclideanVAE.mlp(6, 2, hidden=(8,)), DiagonalNormalEncoder.mlp(6, 2, hidden=(8,))),
    ]:
        model, guide = model.double(), guide.double()
        svi = SVI(model, guide, Adam({"lr": 3e-2}), loss=Trace_ELBO())
        first = sum(svi.evaluate_loss(x) for _ in range(10)) / 10
        for _ in range(60):
            svi.step(x)
        last = sum(svi.evaluate_loss(x) for _ in range(10)) / 10
        assert last < first


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"manifold": "torus"}, "manifold"),
        ({"step_size": -1.0}, "step_size"),
        ({"step_size": True}, "step_size"),
        ({"energy_penalty": -0.1}, "energy_penalty"),
        ({"energy_penalty": True}, "energy_penalty"),
        ({"updates": "joint"}, "updates"),
        ({"estimator": "svgd"}, "estimator"),
        ({"estimator": "dsm", "manifold": "sphere"}, "estimator"),
        ({"energy": lambda z, x: z.sum(-1)}, "energy must be a torch.nn.Module"),
        ({"prefix": 3}, "prefix"),
    ],
)
def test_implicit_elbo_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImplicitELBO(**kwargs)


def test_wae_losses_reject_bad_arguments():
    with pytest.raises(ValueError, match="wae_lambda"):
        ImplicitWAELoss(wae_lambda=0.0)
    with pytest.raises(ValueError, match="wae_lambda"):
        MMDWAELoss(wae_lambda=True)
    with pytest.raises(ValueError, match="kernel"):
        MMDWAELoss(kernel="laplace")


@pytest.mark.filterwarnings("ignore:Found non-auxiliary vars")
def test_implicit_elbo_rejects_mismatched_sites():
    x = _digits_like()
    sphere_model = SphericalVAE.mlp(6, 2, hidden=(8,)).double()
    flat_guide = ImplicitEncoder.mlp(6, 2, hidden=(8,), manifold=None).double()
    sphere_guide = ImplicitEncoder.mlp(6, 2, hidden=(8,)).double()
    with pytest.raises(ValueError, match="manifold='sphere'"):
        ImplicitELBO().loss(sphere_model, sphere_guide, x)
    euclidean = EuclideanVAE.mlp(6, 2, hidden=(8,)).double()
    with pytest.raises(ValueError, match="prior on the sphere at site 'z'"):
        ImplicitELBO(manifold="sphere").loss(euclidean, flat_guide, x)
    with pytest.raises(ValueError, match="site 'z'"):  # codes off the sphere
        ImplicitELBO(manifold="sphere").loss(sphere_model, flat_guide_with_dim(3), x)

    def two_sites(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))
            pyro.sample("w", dist.Normal(torch.zeros(2, dtype=D64), 1.0).to_event(1))

    with pytest.raises(ValueError, match="exactly one latent site"):
        ImplicitELBO().loss(euclidean, two_sites, x)

    def not_reparametrised(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.VonMises(torch.zeros(2, dtype=D64), 1.0).to_event(1))

    with pytest.raises(ValueError, match="not reparametrised"):
        ImplicitELBO().loss(euclidean, not_reparametrised, x)
    with pytest.raises(ValueError, match="first positional argument"):
        ImplicitELBO().loss(lambda x=None: euclidean(x), lambda x=None: flat_guide(x), x=x)


def flat_guide_with_dim(d):
    """A Euclidean implicit encoder with d coordinates (not on the sphere)."""
    return ImplicitEncoder(nn.Linear(6 + 8, d), d, manifold=None).double()


def test_encoders_and_energy_reject_bad_input():
    with pytest.raises(ValueError, match="manifold"):
        ImplicitEncoder(nn.Linear(3, 2), 2, manifold="torus")
    with pytest.raises(ValueError, match="noise_dim"):
        ImplicitEncoder(nn.Linear(3, 2), 2, noise_dim=True)
    with pytest.raises(ValueError, match="network must be a torch.nn.Module"):
        ImplicitEncoder(lambda x: x, 2)
    with pytest.raises(ValueError, match="must output 3 coordinates"):
        ImplicitEncoder(nn.Linear(6 + 8, 2), 2)(_digits_like().float())
    with pytest.raises(ValueError, match="n \\+ 2 = 4 columns"):
        VonMisesFisherEncoder(nn.Linear(6, 3), 2)(_digits_like().float())
    with pytest.raises(ValueError, match="min_concentration"):
        VonMisesFisherEncoder(nn.Linear(6, 4), 2, min_concentration=-1.0)
    with pytest.raises(ValueError, match="rescale"):
        SphericalVAE(nn.Linear(3, 6), 2, rescale=1)
    energy = ConditionalQuadraticFormEnergy(2, 3, hidden=(4,))
    with pytest.raises(ValueError, match="x of shape"):
        energy(torch.randn(5, 2))
    with pytest.raises(ValueError, match="do not broadcast"):
        energy(torch.randn(5, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="takes no x"):
        ConditionalQuadraticFormEnergy(2, hidden=(4,))(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="input_scale"):
        ConditionalQuadraticFormEnergy(2, input_scale=0.0)
    assert energy(torch.randn(7, 5, 2), torch.randn(5, 3)).shape == (7, 5)


@pytest.mark.parametrize("kind", ["vae", "wae", "mmd"])
def test_sphere_losses_on_the_meta_device(kind):
    """No tensor is created without ``device=`` (a CPU tensor would meet meta ones and raise)."""
    pyro.enable_validation(False)
    model = SphericalVAE.mlp(6, 2, hidden=(4,)).double().to("meta")
    guide = ImplicitEncoder.mlp(6, 2, noise_dim=3 if kind == "vae" else 0, hidden=(4,))
    guide = guide.double().to("meta")
    if kind == "vae":
        loss = ImplicitELBO(ConditionalQuadraticFormEnergy(3, 6, hidden=(4,)), manifold="sphere")
    elif kind == "wae":
        loss = ImplicitWAELoss(ConditionalQuadraticFormEnergy(3, hidden=(4,)), manifold="sphere")
    else:
        loss = MMDWAELoss()
    loss.owned_modules.double().to("meta")
    x = torch.empty(5, 6, dtype=D64, device="meta")
    value = loss.differentiable_loss(model, guide, x, 50)
    assert value.device.type == "meta"
    value.backward()
