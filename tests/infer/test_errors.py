"""Bad input gets a clear error naming the site."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_vsm import (
    JointFisherLoss,
    M1Loss,
    M2Loss,
    M3Loss,
    NonFiniteLossError,
    ScoreObjectiveError,
)
from pyro_vsm.datasets import LinearGaussian

SCORE_LOSSES = [
    lambda: M1Loss(guide_steps=0),
    lambda: M1Loss(inference="fisher"),
    lambda: JointFisherLoss(),
    lambda: M2Loss(num_particles=2),
    lambda: M3Loss(num_particles=2, bilevel_steps=1),
]


def _guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))


@pytest.mark.parametrize("make_loss", SCORE_LOSSES)
def test_no_observed_site(make_loss):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ScoreObjectiveError, match="no observed sample site"):
        make_loss().loss(model, _guide, torch.randn(5))


@pytest.mark.parametrize("make_loss", SCORE_LOSSES)
def test_discrete_observed_site(make_loss):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("counts", dist.Poisson(z.exp()), obs=x)

    with pytest.raises(ScoreObjectiveError, match="observed site 'counts'"):
        make_loss().loss(model, _guide, torch.ones(5))


def _normal_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x)


@pytest.mark.parametrize(
    "make_loss",
    [lambda: M1Loss(inference="kl"), lambda: M1Loss(inference="fisher-reparam"), JointFisherLoss],
)
def test_non_reparametrisable_guide(make_loss):
    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 1.0).has_rsample_(False))

    svi = SVI(_normal_model, guide, Adam({"lr": 0.1}), loss=make_loss())
    with pytest.raises(ScoreObjectiveError, match="guide site 'z'.*not reparametrisable"):
        svi.step(torch.randn(5))


def test_non_reparametrisable_guide_is_fine_without_reparametrisation():
    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + 0 * x, 1.0).has_rsample_(False))

    svi = SVI(_normal_model, guide, Adam({"lr": 0.1}), loss=M1Loss(inference="fisher"))
    svi.step(torch.randn(5))
    svi.step(torch.randn(5))


@pytest.mark.parametrize("make_loss", SCORE_LOSSES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_data(make_loss, bad):
    x = torch.randn(5)
    x[2] = bad
    with pytest.raises((ScoreObjectiveError, ValueError), match="'obs'"):
        make_loss().loss(_normal_model, _guide, x)


def test_non_finite_data_without_validation_fails_at_step():
    x = torch.randn(5)
    x[2] = float("nan")
    pyro.enable_validation(False)
    svi = SVI(_normal_model, _guide, Adam({"lr": 0.1}), loss=M1Loss(guide_steps=0))
    with pytest.raises(NonFiniteLossError, match="step 0 .*site\\(s\\) 'obs'"):
        svi.step(x)


@pytest.mark.parametrize("make_loss", [lambda: M1Loss(guide_steps=0), JointFisherLoss])
def test_non_finite_loss_during_training_names_step_and_site(make_loss):
    lg = LinearGaussian(learnable=True, dtype=torch.float32)
    x = lg.sample_data(10)
    svi = SVI(lg.model, lg.guide, Adam({"lr": 1e-3}), loss=make_loss())
    svi.step(x)
    svi.step(x)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    with torch.no_grad():  # the decoder blows up: squared scores overflow float32
        pyro.param("dec_W").unconstrained().fill_(1e30)
    with pytest.raises(NonFiniteLossError, match="at step 2.*'x'"):
        svi.step(x)
    # no step was taken on the non-finite loss
    for k, v in pyro.get_param_store().items():
        if k != "dec_W":
            assert torch.equal(before[k], v.detach())


def test_guide_without_the_data():
    lg = LinearGaussian(dx=3)
    data = torch.cat([lg.sample_data(6), torch.ones(6, 1, dtype=torch.float64)], -1)

    def model(data):  # observes the first three columns only
        W, b, gamma = lg.decoder_params()
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=data.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, gamma.sqrt()).to_event(1), obs=data[:, :3])

    def guide(data):
        A, c, s = lg.encoder_params()
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(data[:, :3] @ A.T + c, s).to_event(1))

    # M1's full value needs ∇ₓ log q(z|x): the guide's argument must hold the observed data
    with pytest.raises(ScoreObjectiveError, match="observed site 'x'.*guide's arguments"):
        M1Loss().loss(model, guide, data)


def test_guide_that_ignores_the_data_has_zero_data_score():
    lg = LinearGaussian()
    x = lg.sample_data(6)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(6, 2, dtype=x.dtype), 1.0).to_event(1))

    value = M1Loss(num_particles=2).loss(lg.model, guide, x)
    assert value == value


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(inference="elbo"), "inference"),
        (dict(guide_steps=-1), "guide_steps"),
        (dict(num_particles=0), "num_particles"),
        (dict(laplacian="fast"), "laplacian"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M1Loss(**kwargs)
