"""GaussianMixtureGuide: Fisher inference without reparametrisation (Wenliang, 2022, A.5.2)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_vsm import M1Loss, ScoreObjectiveError
from pyro_vsm.evaluation import posterior_fisher_divergence
from pyro_vsm.guides import GaussianMixtureGuide

D = torch.float64
X = torch.tensor(2.0, dtype=D)


def model_p1(x):
    """Prior N(0, I), p_I(x|z) = N(x; z1 z2, 0.5²) (eq. 11): two ridges, modes near ±(1.32, 1.32)."""
    z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z[..., 0] * z[..., 1], 0.5), obs=x)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_initialisation_follows_appendix_a52():
    g = GaussianMixtureGuide("z", 3, seed=7, dtype=D)
    assert g.loc.shape == (10, 3) and g.scale.shape == (10, 3) and g.logits.shape == (10,)
    assert torch.equal(g.scale, torch.ones(10, 3, dtype=D))  # sds 1.0
    assert torch.allclose(g.weights, torch.full((10,), 0.1, dtype=D))  # equal weights
    # means: prior draws, reproducible from an int seed or a generator
    assert torch.equal(g.loc, GaussianMixtureGuide("z", 3, seed=7, dtype=D).loc)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(g.loc, GaussianMixtureGuide("z", 3, seed=gen, dtype=D).loc)
    assert not torch.equal(g.loc, GaussianMixtureGuide("z", 3, seed=8, dtype=D).loc)
    many = GaussianMixtureGuide("z", 2, num_posteriors=500, prior_scale=2.0, seed=0, dtype=D)
    assert many.loc.shape == (500, 10, 2) and many.logits.shape == (500, 10)
    assert abs(many.loc.std().item() - 2.0) < 0.1 and abs(many.loc.mean().item()) < 0.1
    assert g().shape == (3,)  # a draw of the site; its params are now in the param store
    assert {"mixture_z.loc", "mixture_z.scale", "mixture_z.logits"} <= set(pyro.get_param_store())


def test_fisher_fit_to_bimodal_posterior_covers_both_modes():
    pyro.set_rng_seed(2)
    guide = GaussianMixtureGuide("z", 2, seed=2, dtype=D)
    fd_before = posterior_fisher_divergence(model_p1, guide, X, num_samples=4000).item()
    loss = M1Loss(inference="fisher", guide_steps=1, num_particles=10, vectorize_particles=True)
    svi = SVI(model_p1, guide, Adam({"lr": 0.05}), loss)
    for _ in range(600):  # 300 guide steps (the model has no parameters: its steps are no-ops)
        svi.step(X)
    assert loss.schedule.step == 600
    fd_after = posterior_fisher_divergence(model_p1, guide, X, num_samples=4000).item()
    # measured (seed 2): 382 -> 2.0; over seeds 0-11 the fit ends between 1.8 and 4.2
    assert fd_after < 10.0 and fd_after < fd_before / 20, (fd_before, fd_after)
    with torch.no_grad():
        z = guide.distribution().sample((20000,))
    frac_pos = (z[:, 0] > 0).double().mean().item()
    # FD cannot weigh disjoint modes against each other, but both keep a good share (seed 2: 0.49)
    assert 0.2 < frac_pos < 0.8, frac_pos
    # and the mass sits on the two ridges z1 z2 > 0, where the posterior puts it
    assert (z[:, 0] * z[:, 1] > 0).double().mean().item() > 0.95


@pytest.mark.parametrize("inference", ["kl", "fisher-reparam"])
def test_reparametrised_objectives_raise(inference):
    guide = GaussianMixtureGuide("z", 2, seed=0, dtype=D)
    svi = SVI(model_p1, guide, Adam({"lr": 0.01}), M1Loss(inference=inference, guide_steps=1))
    with pytest.raises(ScoreObjectiveError, match="'z'.*not reparametrisable"):
        svi.step(X)


def test_plate_of_independent_posteriors():
    """num_posteriors=N: N independent mixtures fitted at once (here N copies of one problem)."""
    n = 3

    def model(x):
        with pyro.plate("posteriors", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[..., 0] * z[..., 1], 0.5), obs=x)

    x = X.expand(n)
    pyro.set_rng_seed(0)
    guide = GaussianMixtureGuide("z", 2, num_posteriors=n, seed=0, dtype=D)
    before = posterior_fisher_divergence(model, guide, x, num_samples=2000)
    svi = SVI(model, guide, Adam({"lr": 0.05}), M1Loss(inference="fisher", num_particles=4))
    for _ in range(300):  # 150 guide steps
        svi.step(x)
    after = posterior_fisher_divergence(model, guide, x, num_samples=2000)
    assert before.shape == after.shape == (n,)
    # seed 0: ~[580, 310, 680] -> ~[4, 8, 7]; over seeds 0-5 the worst ratio was 0.45
    assert (after < before / 2).all(), (before, after)
    assert guide.loc.shape == (n, 10, 2) and guide.weights.shape == (n, 10)
