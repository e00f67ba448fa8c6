import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import SGD, Adam, ClippedAdam

from pyro_vsm import JointFisherLoss, M1Loss
from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import GaussianVAE
from tests.common import repeated_mean

D = torch.float64


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("laplacian", ["auto", "hutchinson"])
def test_m1_value_matches_closed_form_on_linear_gaussian(vectorize, laplacian):
    lg = LinearGaussian(dx=4, dz=2)
    x = lg.sample_data(8)
    loss = M1Loss(num_particles=50, vectorize_particles=vectorize, laplacian=laplacian)
    mean, se = repeated_mean(lambda: loss.loss(lg.model, lg.guide, x), 40)
    exact = lg.m1(x).sum().item()
    # unbiased: the average of 40 independent estimates is within 4 standard errors
    assert abs(mean - exact) < 4 * se + 1e-8, (mean, exact, se)


def test_m1_equals_joint_fisher_minus_posterior_fisher():
    lg = LinearGaussian(dx=3, dz=2, seed=3)
    x = lg.sample_data(6)
    jf = JointFisherLoss(num_particles=100, vectorize_particles=True)
    mean, se = repeated_mean(lambda: jf.loss(lg.model, lg.guide, x), 40)
    exact = (lg.m1(x) + lg.posterior_fisher(x)).sum().item()
    assert abs(mean - exact) < 4 * se + 1e-8, (mean, exact, se)


def test_evaluate_loss_under_no_grad():
    lg = LinearGaussian(learnable=True)
    x = lg.sample_data(10)
    loss = M1Loss(num_particles=4)
    svi = SVI(lg.model, lg.guide, Adam({"lr": 1e-3}), loss=loss)
    with torch.no_grad():
        value = svi.evaluate_loss(x)
    assert isinstance(value, float) and value == value
    assert loss.schedule.step == 0  # evaluating takes no step


def test_proposition_3_1_optimal_gamma():
    """With q fixed, M1 over γ is minimised at γ* = mean_n L_KL(x_n) / d_x (Prop. 3.1, eq. 22)."""
    lg = LinearGaussian(dx=3, dz=2, seed=5)
    x = lg.sample_data(64)
    W, b, A, c, s = lg.W, lg.b, lg.A, lg.c, lg.s

    def model(x):
        gamma = pyro.param(
            "gamma", torch.tensor(1.0, dtype=D), constraint=dist.constraints.positive
        )
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, gamma.sqrt()).to_event(1), obs=x)

    m = x @ A.T + c
    l_kl = ((x - m @ W.T - b) ** 2).sum(-1) + torch.trace(W @ torch.diag(s**2) @ W.T)
    gamma_star = (l_kl.mean() / 3).item()
    # closed-form M1 at any γ equals the estimator's expectation
    loss = M1Loss(guide_steps=0, num_particles=200, vectorize_particles=True)
    pyro.param("gamma", torch.tensor(0.8, dtype=D), constraint=dist.constraints.positive)
    mean, se = repeated_mean(lambda: loss.loss(model, lg.guide, x), 20)
    exact = (l_kl / (2 * 0.64) - 3 / 0.8).sum() + 0.5 * torch.trace(
        A.T @ torch.diag(s**-2) @ A
    ) * 64
    assert abs(mean - exact.item()) < 4 * se + 1e-8
    # training γ alone (J = 0: the guide is frozen) lands on γ*
    pyro.clear_param_store()
    svi = SVI(
        model,
        lg.guide,
        Adam({"lr": 0.02}),
        loss=M1Loss(guide_steps=0, num_particles=64, vectorize_particles=True),
    )
    for _ in range(800):
        svi.step(x)
    gamma = pyro.param("gamma").item()
    assert gamma == pytest.approx(gamma_star, rel=0.03), (gamma, gamma_star)


def _snapshot(prefix):
    store = pyro.get_param_store()
    return {k: store[k].detach().clone() for k in store.keys() if k.startswith(prefix)}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("inference", ["kl", "fisher", "fisher-reparam"])
@pytest.mark.parametrize("optim", ["adam", "clipped_adam", "sgd_momentum"])
def test_gradient_routing(inference, optim):
    lg = LinearGaussian(learnable=True)
    lg.params()  # create the params so that the first step can be compared
    x = lg.sample_data(16)
    make = {
        "adam": lambda: Adam({"lr": 0.05}),
        "clipped_adam": lambda: ClippedAdam({"lr": 0.05, "lrd": 0.9}),
        "sgd_momentum": lambda: SGD({"lr": 1e-4, "momentum": 0.9}),
    }[optim]
    loss = M1Loss(inference=inference, guide_steps=2, num_particles=2)
    svi = SVI(lg.model, lg.guide, make(), loss=loss)
    phases = []
    for _ in range(7):  # guide, guide, model, guide, guide, model, guide
        dec, enc = _snapshot("dec_"), _snapshot("enc_")
        phase = loss.phase
        svi.step(x)
        phases.append(phase)
        if phase == "guide":
            assert _same(dec, _snapshot("dec_")), "model params moved on a guide step"
            assert not _same(enc, _snapshot("enc_")), "guide params did not move on a guide step"
        else:
            assert _same(enc, _snapshot("enc_")), "guide params moved on a model step"
            assert not _same(dec, _snapshot("dec_")), "model params did not move on a model step"
    assert phases == ["guide", "guide", "model", "guide", "guide", "model", "guide"]
    if optim == "clipped_adam":
        # the learning-rate decay ticks only on the steps that moved a parameter
        store = pyro.get_param_store()
        lrs = {
            k: svi.optim.optim_objs[store[k].unconstrained()].param_groups[0]["lr"]
            for k in store.keys()
        }
        assert lrs["dec_W"] == pytest.approx(0.05 * 0.9**2)
        assert lrs["enc_A"] == pytest.approx(0.05 * 0.9**5)


def test_elbo_module_routes_gradients_per_phase():
    with pyro.settings.context(module_local_params=True):
        torch.manual_seed(0)
        model, guide = (
            GaussianVAE.mlp(2, 2, hidden=(8,)),
            DiagonalNormalEncoder.mlp(2, 2, hidden=(8,)),
        )
        x = torch.randn(32, 2)
        module = M1Loss(guide_steps=1)(model, guide)
        module(x)  # creates the parameters
        model.zero_grad(set_to_none=True)
        guide.zero_grad(set_to_none=True)
        value = module(x)  # second schedule step: a model step
        value.backward()
        assert all(p.grad is None for p in guide.parameters())
        assert all(p.grad is not None for p in model.parameters())
        model.zero_grad(set_to_none=True)
        value = module(x)  # third step: a guide step
        value.backward()
        assert all(p.grad is None for p in model.parameters())
        assert all(p.grad is not None for p in guide.parameters())
        # a plain torch optimizer loop runs
        opt = torch.optim.Adam(module.parameters(), lr=1e-2)
        for _ in range(6):
            opt.zero_grad()
            module(x).backward()
            opt.step()


def test_jointfisher_elbo_module_is_differentiable():
    with pyro.settings.context(module_local_params=True):
        model, guide = (
            GaussianVAE.mlp(2, 2, hidden=(8,)),
            DiagonalNormalEncoder.mlp(2, 2, hidden=(8,)),
        )
        x = torch.randn(16, 2)
        module = JointFisherLoss(num_particles=2)(model, guide)
        module(x).backward()
        assert all(p.grad is not None for p in model.parameters())
        assert all(p.grad is not None for p in guide.parameters())


def test_schedule_state_round_trip():
    loss = M1Loss(guide_steps=3)
    for _ in range(5):
        loss.schedule.advance()
    other = M1Loss(guide_steps=1)
    other.schedule.load_state_dict(loss.schedule.state_dict())
    assert other.guide_steps == 3 and other.schedule.step == 5
    phases = []
    for _ in range(4):
        phases.append(other.phase)
        other.schedule.advance()
    # steps 5..8 of the cycle guide, guide, guide, model
    assert phases == ["guide", "guide", "model", "guide"]
