import pyro
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_vsm import M2Loss, M3Loss
from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import GaussianVAE
from tests.common import repeated_mean


@pytest.mark.parametrize("cls,closed", [(M2Loss, "m2"), (M3Loss, "m3")])
@pytest.mark.parametrize("vectorize,particles", [(True, 2), (True, 20), (False, 3)])
def test_value_is_unbiased_on_linear_gaussian(cls, closed, vectorize, particles):
    lg = LinearGaussian(dx=4, dz=2)
    x = lg.sample_data(8)
    loss = cls(num_particles=particles, vectorize_particles=vectorize)
    mean, se = repeated_mean(lambda: loss.loss(lg.model, lg.guide, x), 60)
    exact = getattr(lg, closed)(x).sum().item()
    # unbiased for any number of particles (U-statistic): within 4 standard errors
    assert abs(mean - exact) < 4 * se + 1e-8, (mean, exact, se)


def test_unbiased_where_the_plugin_square_is_not():
    # with S = 2 the plug-in ½‖mean‖² overestimates ½‖E s‖² by ½ tr Cov[s] / S per point
    lg = LinearGaussian(dx=4, dz=2)
    x = lg.sample_data(8)
    cov_trace = torch.trace(lg.W @ torch.diag(lg.s**2) @ lg.W.T) / lg.gamma**2
    plugin_bias = (0.5 * cov_trace / 2).item() * 8
    mean, se = repeated_mean(lambda: M2Loss(num_particles=2).loss(lg.model, lg.guide, x), 300)
    exact = lg.m2(x).sum().item()
    assert abs(mean - exact) < 4 * se
    assert abs(mean - plugin_bias - exact) > 4 * se  # a plug-in estimate would fail this test


def test_m2_with_exact_posterior_is_hyvarinen_score_matching():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(6)
    loss = M2Loss(num_particles=10, vectorize_particles=True)
    mean, se = repeated_mean(lambda: loss.loss(lg.model, lg.exact_guide, x), 40)
    exact = lg.score_matching_loss(x).sum().item()
    assert abs(mean - exact) < 4 * se + 1e-8


def _snapshot(prefix):
    store = pyro.get_param_store()
    return {k: store[k].detach().clone() for k in store.keys() if k.startswith(prefix)}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cls,extra", [(M2Loss, {}), (M3Loss, {}), (M3Loss, {"bilevel_steps": 2})])
@pytest.mark.parametrize("inference", ["kl", "fisher"])
def test_gradient_routing(cls, extra, inference):
    lg = LinearGaussian(learnable=True)
    lg.params()
    x = lg.sample_data(16)
    loss = cls(inference=inference, guide_steps=1, num_particles=3, **extra)
    svi = SVI(lg.model, lg.guide, Adam({"lr": 0.01}), loss=loss)
    for _ in range(4):
        dec, enc = _snapshot("dec_"), _snapshot("enc_")
        phase = loss.phase
        value = svi.step(x)
        assert isinstance(value, float)
        if phase == "guide":
            assert _same(dec, _snapshot("dec_")) and not _same(enc, _snapshot("enc_"))
        else:
            assert _same(enc, _snapshot("enc_")) and not _same(dec, _snapshot("dec_"))


def _model_gradient(loss, lg, x, seed):
    pyro.set_rng_seed(seed)
    value = loss.differentiable_loss(lg.model, lg.guide, x)
    (grad,) = torch.autograd.grad(value, [pyro.param("dec_W").unconstrained()])
    return value.detach(), grad


def test_bilevel_outer_gradient_matches_finite_differences():
    lg = LinearGaussian(dx=3, dz=2, learnable=True)
    lg.params()
    x = lg.sample_data(5)
    # guide_steps=0: every step is a model step
    loss = M3Loss(guide_steps=0, bilevel_steps=2, bilevel_lr=1e-3, num_particles=3)
    _, grad = _model_gradient(loss, lg, x, seed=7)
    W = pyro.param("dec_W").unconstrained()
    h = 1e-5
    fd = torch.zeros_like(W)
    for idx in [(0, 0), (1, 1), (2, 0)]:
        vals = []
        for sign in (1, -1):
            with torch.no_grad():
                W[idx] += sign * h
            vals.append(_model_gradient(loss, lg, x, seed=7)[0])
            with torch.no_grad():
                W[idx] -= sign * h
        fd[idx] = (vals[0] - vals[1]) / (2 * h)
        assert abs(float(fd[idx] - grad[idx])) < 1e-5 * (1 + abs(float(grad[idx]))), (idx, fd, grad)
    # the unrolled guide update contributes: K = 2 and K = 0 give different model gradients
    _, grad0 = _model_gradient(M3Loss(guide_steps=0, num_particles=3), lg, x, seed=7)
    assert not torch.allclose(grad, grad0)


def test_bilevel_with_a_pyro_module_guide():
    torch.manual_seed(0)
    model = GaussianVAE.mlp(2, 2, hidden=(8,))
    guide = DiagonalNormalEncoder.mlp(2, 2, hidden=(8,))
    x = torch.randn(32, 2)
    loss = M3Loss(guide_steps=0, bilevel_steps=1, bilevel_lr=0.1, num_particles=2)
    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=loss)
    svi.step(x)  # creates the params
    enc = {k: v.detach().clone() for k, v in guide.named_parameters()}
    dec = {k: v.detach().clone() for k, v in model.named_parameters()}
    pyro.set_rng_seed(1)
    g1 = torch.autograd.grad(loss.differentiable_loss(model, guide, x), list(model.parameters()))
    pyro.set_rng_seed(1)
    loss0 = M3Loss(guide_steps=0, num_particles=2)
    g0 = torch.autograd.grad(loss0.differentiable_loss(model, guide, x), list(model.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1, strict=True))
    svi.step(x)
    assert all(torch.equal(v, dict(guide.named_parameters())[k]) for k, v in enc.items())
    assert any(not torch.equal(v, dict(model.named_parameters())[k]) for k, v in dec.items())


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_particles >= 2"):
        M2Loss(num_particles=1)
    with pytest.raises(ValueError, match="bilevel_steps"):
        M3Loss(num_particles=2, bilevel_steps=-1)
    with pytest.raises(ValueError, match="bilevel_lr"):
        M3Loss(num_particles=2, bilevel_steps=1, bilevel_lr=0.0)
    with pytest.raises(ValueError, match="inference"):
        M3Loss(inference="bogus", num_particles=2)


@pytest.mark.parametrize("validation", [True, False])
def test_diverging_bilevel_step_raises_before_any_parameter_moves(validation):
    from pyro_vsm import NonFiniteLossError

    pyro.enable_validation(validation)
    lg = LinearGaussian(learnable=True)
    lg.params()
    x = lg.sample_data(8)
    loss = M3Loss(guide_steps=0, bilevel_steps=3, bilevel_lr=1e12, num_particles=2)
    svi = SVI(lg.model, lg.guide, Adam({"lr": 0.01}), loss=loss)
    before = _snapshot("")
    with pytest.raises(NonFiniteLossError, match="left their domain|non-finite loss"):
        svi.step(x)
    assert _same(before, _snapshot(""))
