"""AAELoss and VGHLoss: label conventions, each group's gradient, sites, options."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from torch import nn
from torch.nn.functional import softplus

from pyro_vsm import AAELoss, VGHLoss
from pyro_vsm.models import mlp

D64 = torch.float64
DX, DZ, N = 3, 2, 5
PHASES = ("encoder", "generator", "data_discriminator", "code_discriminator")


def _net(i, o, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mlp(i, (4,), o).to(D64)


class Problem:
    """A hand-written Pyro model (Laplace likelihood, prior N(loc, scale²)) and guide (Normal
    from one shared output layer, or Delta)."""

    def __init__(self, guide="normal", prior_loc=0.0, prior_scale=1.0, b=0.5):
        self.enc, self.dec = _net(DX, 2 * DZ, 1), _net(DZ, DX, 2)
        self.kind, self.prior_loc, self.prior_scale, self.b = guide, prior_loc, prior_scale, b

    def prior(self, x):
        loc = torch.full((DZ,), self.prior_loc, dtype=x.dtype)
        return dist.Normal(loc, self.prior_scale).to_event(1)

    def model(self, x, num_data=None):
        pyro.module("decoder", self.dec)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Laplace(self.dec(z), self.b).to_event(1), obs=x)

    def q(self, x):
        out = self.enc(x)
        if self.kind == "delta":
            return dist.Delta(out[..., :DZ], event_dim=1)
        return dist.Normal(out[..., :DZ], softplus(out[..., DZ:]) + 1e-3).to_event(1)

    def guide(self, x, num_data=None):
        pyro.module("encoder", self.enc)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", self.q(x))


def _data(n=N, seed=0):
    return torch.randn(n, DX, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _vgh(variant="vgh++", **kw):
    return VGHLoss(_net(DX, 1, 3), _net(DZ, 1, 4), variant=variant, **kw)


class Constant(nn.Module):
    """A discriminator with a constant logit; it records its inputs."""

    def __init__(self, value=0.0, fn=None):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(value, dtype=D64))
        self.scale = nn.Parameter(torch.tensor(1.0, dtype=D64))
        self.fn, self.seen = fn, []

    def forward(self, v):
        self.seen.append(v.detach())
        if self.fn is None:
            return torch.zeros(v.shape[:-1], dtype=v.dtype) + self.bias
        return self.scale * self.fn(v) + self.bias


# -- label and sign conventions ------------------------------------------------------------------
def _gaussian_code_problem(n, q_loc, q_scale):
    """A guide q(z|x) = N(q_loc, q_scale²) for every x, the prior N(0, I) and the analytic
    logit ℓ = log p(z) − log q(z)."""
    q = dist.Normal(torch.full((DZ,), q_loc, dtype=D64), q_scale).to_event(1)
    p = dist.Normal(torch.zeros(DZ, dtype=D64), 1.0).to_event(1)
    prob = Problem()
    prob.q = lambda x: q.expand([len(x)])
    return prob, p, q, (lambda z: p.log_prob(z) - q.log_prob(z)), _data(n)


def test_encoder_adversarial_term_with_the_optimal_logit_is_the_kl():
    prob, p, q, logit, x = _gaussian_code_problem(4000, 0.7, 0.5)
    loss = AAELoss(Constant(fn=logit))
    loss.loss_and_grads(prob.model, prob.guide, x)  # an encoder step
    value = loss.last_terms["code_adversarial"].item() / len(x)
    kl = torch.distributions.kl_divergence(q, p).item()
    z = q.sample((20000,))
    sd = (q.log_prob(z) - p.log_prob(z)).std().item()
    assert abs(value - kl) < 4 * sd / math.sqrt(len(x)), (value, kl)


def test_code_discriminator_loss_is_2_log_2_when_q_equals_p():
    prob, _, _, logit, x = _gaussian_code_problem(50, 0.0, 1.0)
    loss = AAELoss(Constant(fn=logit))
    loss.schedule.step = 2  # the code discriminator's phase
    loss.loss_and_grads(prob.model, prob.guide, x)
    assert loss.last_terms["code_discriminator"].item() == pytest.approx(2 * math.log(2) * 50)


def test_the_optimal_logit_is_a_stationary_point_of_the_code_discriminator():
    """For ℓ = a log(p/q) + b, C's loss is stationary at a = 1, b = 0: its a-gradient is
    N(E_q[σ(ℓ)ℓ] − E_p[σ(−ℓ)ℓ]) = 0, while swapped labels give N(KL[p‖q] + KL[q‖p])."""
    prob, p, q, logit, x = _gaussian_code_problem(4000, 1.0, 0.5)
    disc = Constant(fn=logit)
    loss = AAELoss(disc)
    loss.schedule.step = 2
    loss.loss_and_grads(prob.model, prob.guide, x)
    zq, zp = disc.seen
    lq, lp = logit(zq), logit(zp)
    gq, gp = torch.sigmoid(lq) * lq, -torch.sigmoid(-lp) * lp
    se = math.sqrt(len(x) * (gq.var() + gp.var()).item())
    assert disc.scale.grad.item() == pytest.approx((gq.sum() + gp.sum()).item(), rel=1e-9)
    assert abs(disc.scale.grad.item()) < 4 * se, (disc.scale.grad, se)
    assert abs(disc.bias.grad.item()) < 4 * math.sqrt(len(x) / 2)  # terms in [0, 1]
    swapped = (torch.sigmoid(lp) * lp - torch.sigmoid(-lq) * lq).sum().item()
    symmetric_kl = torch.distributions.kl_divergence(p, q) + torch.distributions.kl_divergence(q, p)
    assert swapped == pytest.approx(len(x) * symmetric_kl.item(), rel=0.1)
    assert swapped > 20 * se


@pytest.mark.parametrize("form", ["logit", "non_saturating"])
def test_exact_terms_with_a_delta_guide(form):
    """Delta guide, constant logits c_D, c_C: every term in closed form (Laplace: ℓ₁)."""
    prob = Problem(guide="delta", b=0.5)
    x = _data()
    c_d, c_c = 0.3, -0.8
    loss = VGHLoss(
        Constant(c_d),
        Constant(c_c),
        variant="vgh++",
        updates="simultaneous",
        real_weight=2.0,
        generator_loss=form,
        encoder_reconstruction_weight=3.0,
        generator_reconstruction_weight=5.0,
    )
    loss.loss_and_grads(prob.model, prob.guide, x)
    t = {k: v.item() for k, v in loss.last_terms.items()}
    with torch.no_grad():
        x_hat = prob.dec(prob.enc(x)[:, :DZ])
        l1 = (x - x_hat).abs().sum().item() / prob.b + N * DX * math.log(2 * prob.b)
    fool = (lambda c: -c) if form == "logit" else (lambda c: math.log1p(math.exp(-c)))
    sp = lambda c: math.log1p(math.exp(c))  # noqa: E731
    assert t["reconstruction"] == pytest.approx(l1)
    assert t["code_adversarial"] == pytest.approx(N * fool(c_c))
    assert t["data_adversarial"] == pytest.approx(N * fool(c_d))
    assert t["prior_adversarial"] == pytest.approx(N * fool(c_d))
    assert t["encoder"] == pytest.approx(3 * l1 + N * fool(c_c))
    assert t["generator"] == pytest.approx(5 * l1 + 2 * N * fool(c_d))
    assert t["data_discriminator"] == pytest.approx(N * (2 * sp(-c_d) + 2 * sp(c_d)))
    assert t["code_discriminator"] == pytest.approx(N * (sp(c_c) + sp(-c_c)))


def test_discriminators_see_likelihood_means_and_the_models_own_prior():
    prob = Problem(guide="delta", prior_loc=3.0, prior_scale=0.1)
    x = _data(400)
    d, c = Constant(), Constant()
    loss = VGHLoss(d, c, variant="vgh++", updates="simultaneous")
    loss.loss(prob.model, prob.guide, x)
    z_hat, z_prior = c.seen  # C: posterior then prior samples
    x_hat, x_real, x_prior = d.seen  # D: reconstructions, data, prior samples
    with torch.no_grad():
        assert torch.equal(z_hat, prob.enc(x)[:, :DZ])
        assert torch.allclose(x_hat, prob.dec(z_hat))
        assert torch.allclose(x_prior, prob.dec(z_prior))
    assert torch.equal(x_real, x)
    assert (z_prior.mean() - 3.0).abs() < 0.02 and (z_prior.std() - 0.1).abs() < 0.01


# -- gradients and routing ---------------------------------------------------------------------
def _hand_objectives(prob, loss, x, seed):
    """Algorithm 5 written out with the loss's random draws (guide first, then the prior)."""
    pyro.set_rng_seed(seed)
    q = prob.q(x)
    z_hat = q.rsample()
    z_prior = prob.prior(x).expand([len(x)]).rsample()
    x_hat, x_gen = prob.dec(z_hat), prob.dec(z_prior)
    rec = -dist.Laplace(x_hat, prob.b).to_event(1).log_prob(x).sum()
    c = loss.code_discriminator

    def ell(net, v):
        return net(v).squeeze(-1)

    if isinstance(loss, AAELoss):
        return {
            "encoder": rec - ell(c, z_hat).sum(),
            "generator": rec,
            "code_discriminator": (softplus(ell(c, z_hat)) + softplus(-ell(c, z_prior))).sum(),
        }
    d = loss.data_discriminator
    return {
        "encoder": rec - ell(c, z_hat).sum(),
        "generator": rec - ell(d, x_hat).sum() - ell(d, x_gen).sum(),
        "data_discriminator": (softplus(-ell(d, x)) + softplus(ell(d, x_hat))).sum()
        + softplus(ell(d, x_gen)).sum(),
        "code_discriminator": (softplus(ell(c, z_hat)) + softplus(-ell(c, z_prior))).sum(),
    }


def _groups(prob, loss):
    groups = {"encoder": list(prob.enc.parameters()), "generator": list(prob.dec.parameters())}
    groups.update({k: list(m.parameters()) for k, m in loss.owned_modules.items()})
    return groups


@pytest.mark.parametrize("kind", ["vgh++", "aae"])
@pytest.mark.parametrize("guide", ["normal", "delta"])
def test_each_groups_gradient_is_that_of_its_own_objective(guide, kind):
    prob, x = Problem(guide=guide), _data()
    loss = AAELoss(_net(DZ, 1, 4)) if kind == "aae" else _vgh()
    groups = _groups(prob, loss)
    for i, phase in enumerate(groups):
        assert loss.phase == phase
        pyro.set_rng_seed(10 + i)
        loss.loss_and_grads(prob.model, prob.guide, x)
        expected = _hand_objectives(prob, loss, x, 10 + i)
        assert loss.last_terms[phase].item() == pytest.approx(expected[phase].item(), rel=1e-10)
        grads = torch.autograd.grad(expected[phase], groups[phase])
        for p, g in zip(groups[phase], grads, strict=True):
            assert torch.allclose(p.grad, g, rtol=1e-9, atol=1e-12), (phase, guide)
        for other in groups:
            if other != phase:
                assert all(p.grad is None for p in groups[other]), (phase, other)
        for params in groups.values():
            for p in params:
                p.grad = None


def test_simultaneous_updates_route_every_objective_to_its_group():
    prob, x = Problem(), _data()
    loss = _vgh(updates="simultaneous")
    groups = _groups(prob, loss)
    pyro.set_rng_seed(3)
    loss.loss_and_grads(prob.model, prob.guide, x)
    expected = _hand_objectives(prob, loss, x, 3)
    for phase in PHASES:
        grads = torch.autograd.grad(expected[phase], groups[phase], retain_graph=True)
        for p, g in zip(groups[phase], grads, strict=True):
            assert torch.allclose(p.grad, g, rtol=1e-9, atol=1e-12), phase


@pytest.mark.parametrize("guide", ["normal", "delta"])
def test_inactive_groups_are_bit_identical_through_cycles(guide):
    prob, x = Problem(guide=guide), _data()
    loss = _vgh(disc_steps=2)
    groups = _groups(prob, loss)
    svi = SVI(prob.model, prob.guide, Adam({"lr": 0.05, "betas": (0.5, 0.9)}), loss=loss)
    order = []
    for _ in range(2 * loss.steps_per_cycle):
        phase = loss.phase
        order.append(phase)
        before = {k: [p.detach().clone() for p in v] for k, v in groups.items()}
        assert math.isfinite(svi.step(x))
        for k, params in groups.items():
            same = all(torch.equal(b, p) for b, p in zip(before[k], params, strict=True))
            assert same == (k != phase), (phase, k)
    cycle = ["encoder", "generator"] + ["data_discriminator"] * 2 + ["code_discriminator"] * 2
    assert order == 2 * cycle and loss.steps_per_cycle == 6


def test_aae_trains_encoder_decoder_and_code_discriminator():
    prob, x = Problem(), _data(32)
    loss = AAELoss(_net(DZ, 1, 4), generator_loss="non_saturating")
    svi = SVI(prob.model, prob.guide, Adam({"lr": 0.01}), loss=loss)
    first = svi.evaluate_loss(x)
    assert loss.steps_per_cycle == 3
    for _ in range(30 * loss.steps_per_cycle):
        svi.step(x)
    assert svi.evaluate_loss(x) < first
    assert set(loss.last_terms) == {"code_discriminator", "code_accuracy"}


# -- values, names, parameters ---------------------------------------------------------------
def test_evaluate_loss_is_the_sum_of_all_objectives_whatever_the_phase():
    prob, x = Problem(), _data()
    loss = _vgh()
    for phase in PHASES[:2]:
        assert loss.phase == phase
        pyro.set_rng_seed(4)
        value = loss.loss(prob.model, prob.guide, x)
        expected = _hand_objectives(prob, loss, x, 4)
        assert value == pytest.approx(sum(v.item() for v in expected.values()), rel=1e-10)
        loss.loss_and_grads(prob.model, prob.guide, x)


def test_discriminators_live_in_the_param_store_and_per_parameter_arguments_reach_them():
    prob, x = Problem(), _data()
    loss = _vgh(prefix="run1_")
    names = []

    def adam_args(name):
        names.append(name)
        lr = 0.0 if "discriminator" in name else 0.05
        return {"lr": lr, "betas": (0.5, 0.9)}

    svi = SVI(prob.model, prob.guide, Adam(adam_args), loss=loss)
    frozen = [p.detach().clone() for m in loss.owned_modules.values() for p in m.parameters()]
    for _ in range(loss.steps_per_cycle):
        svi.step(x)
    store = set(pyro.get_param_store().keys())
    assert {f"run1_{k}$$$0.weight" for k in ("data_discriminator", "code_discriminator")} <= store
    assert "run1_code_discriminator.0.weight" in names
    moved = [p for m in loss.owned_modules.values() for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(frozen, moved, strict=True))
    module_params = {id(p) for p in loss(prob.model, prob.guide).parameters()}
    assert {id(p) for p in moved} <= module_params
    state = loss.state_dict()
    assert set(state["modules"]) == {"data_discriminator", "code_discriminator"}


# -- errors ---------------------------------------------------------------------------------------
def test_non_reparametrisable_guide_raises_naming_the_site():
    prob, x = Problem(), _data()
    prob.q = lambda x: dist.VonMises(torch.zeros(N, DZ, dtype=D64), 1.0).to_event(1)
    with pytest.raises(ValueError, match="guide site 'z'.*not reparametrisable"):
        AAELoss(_net(DZ, 1, 4)).loss(prob.model, prob.guide, x)


def test_site_errors():
    prob, x = Problem(), _data()
    with pytest.raises(ValueError, match=r"code_discriminator returned logits of shape \(5, 2\)"):
        AAELoss(nn.Identity()).loss(prob.model, prob.guide, x)

    def two_latents(x, num_data=None):
        prob.guide(x)
        pyro.sample("w", dist.Normal(torch.zeros((), dtype=D64), 1.0))

    def model2(x, num_data=None):
        prob.model(x)
        pyro.sample("w", dist.Normal(torch.zeros((), dtype=D64), 1.0))

    with pytest.raises(ValueError, match=r"one latent site.*\['z', 'w'\]"):
        AAELoss(_net(DZ, 1, 4)).loss(model2, two_latents, x)

    def two_observed(x, num_data=None):
        prob.model(x)
        pyro.sample("y", dist.Normal(torch.zeros((), dtype=D64), 1.0), obs=x.sum())

    with pytest.raises(ValueError, match=r"one observed site.*\['x', 'y'\]"):
        _vgh().loss(two_observed, prob.guide, x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"updates": "alternating"}, "updates must be"),
        ({"disc_steps": 0}, "disc_steps"),
        ({"disc_steps": True}, "disc_steps"),
        ({"updates": "simultaneous", "disc_steps": 2}, "needs updates='cyclic'"),
        ({"generator_loss": "hinge"}, "generator_loss"),
        ({"variant": "vgh+"}, "variant"),
        ({"encoder_data_adversarial": 1}, "encoder_data_adversarial"),
        ({"real_weight": 0.0}, "real_weight"),
        ({"real_weight": True}, "real_weight"),
        ({"encoder_reconstruction_weight": -1.0}, "encoder_reconstruction_weight"),
        ({"generator_reconstruction_weight": float("nan")}, "generator_reconstruction_weight"),
        ({"prefix": 1}, "prefix"),
        ({"num_particles": 0}, "num_particles"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _vgh(**kwargs)


def test_discriminators_must_be_modules():
    with pytest.raises(ValueError, match="code_discriminator must be a torch.nn.Module"):
        AAELoss(lambda z: z.sum(-1))
    with pytest.raises(ValueError, match="data_discriminator must be a torch.nn.Module"):
        VGHLoss(None, _net(DZ, 1, 4))
