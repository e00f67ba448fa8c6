import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.evaluation import (
    elbo_surgery,
    low_posterior_samples,
    marginal_kl,
    negative_elbo,
    posterior_fisher_divergence,
    reconstruction_mse,
    score_matching_loss,
)


def repeats(fn, n):
    vals = torch.stack([fn() for _ in range(n)])
    return vals.mean(0), vals.std(0) / math.sqrt(n)


@pytest.mark.parametrize("dx,dz", [(3, 2), (5, 3)])
def test_posterior_fisher_divergence_matches_closed_form(dx, dz):
    lg = LinearGaussian(dx=dx, dz=dz)
    x = lg.sample_data(5)
    mean, se = repeats(
        lambda: posterior_fisher_divergence(lg.model, lg.guide, x, num_samples=50), 20
    )
    exact = lg.posterior_fisher(x)
    assert bool(((mean - exact).abs() < 4 * se).all()), (mean, exact, se)
    zero = posterior_fisher_divergence(lg.model, lg.exact_guide, x, num_samples=3)
    torch.testing.assert_close(zero, torch.zeros_like(zero), atol=1e-9, rtol=0)


def test_score_matching_loss_matches_closed_form():
    lg = LinearGaussian(dx=4, dz=2)
    x = lg.sample_data(5)
    exact = lg.score_matching_loss(x)
    # exact posterior as guide: equal weights, unbiased estimate
    mean, se = repeats(
        lambda: score_matching_loss(lg.model, lg.exact_guide, x, num_samples=20), 200
    )
    assert bool(((mean - exact).abs() < 4 * se).all()), (mean, exact, se)
    # an approximate (shifted, wider, diagonal) guide: self-normalised, consistent

    def guide(x):
        mu, P = lg.posterior(x)
        sd = torch.linalg.inv(P).diagonal().sqrt()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(mu + 0.2 * sd, 1.5 * sd).to_event(1))

    approx = score_matching_loss(lg.model, guide, x, num_samples=100000)
    assert bool(((approx - exact).abs() < 0.05 * exact.abs() + 0.1).all()), (approx, exact)


def test_reconstruction_mse_and_negative_elbo():
    lg = LinearGaussian(dx=4, dz=2)
    x = lg.sample_data(6)
    torch.testing.assert_close(reconstruction_mse(lg.model, lg.guide, x), lg.reconstruction_mse(x))
    # with the exact posterior the ELBO is tight
    torch.testing.assert_close(negative_elbo(lg.model, lg.exact_guide, x), -lg.log_marginal(x))
    # and with any other guide it is a bound: E[-ELBO] ≥ -log p(x)
    mean, se = repeats(lambda: negative_elbo(lg.model, lg.guide, x, num_samples=100), 10)
    assert bool((mean + lg.log_marginal(x) > -4 * se).all())


def test_elbo_surgery_identity_and_average_kl():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(200)
    out = elbo_surgery(lg.model, lg.guide, x, num_samples=20, chunk_size=37)
    torch.testing.assert_close(out["average_kl"], out["marginal_kl"] + out["mutual_information"])
    # closed-form average KL[q(z|x_n) ‖ N(0, I)] of the diagonal Gaussian guide
    m = x @ lg.A.T + lg.c
    s2 = lg.s**2
    kl = 0.5 * ((s2 + m**2 - 1 - s2.log()).sum(-1))
    assert abs(float(out["average_kl"] - kl.mean())) < 0.05
    assert 0 < float(out["mutual_information"]) <= math.log(200) + 1e-9
    assert float(out["marginal_kl"]) > 0


def test_marginal_kl_closed_form_when_the_guide_ignores_x():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(50)
    loc = torch.tensor([0.5, -1.0], dtype=torch.float64)
    scale = torch.tensor([0.7, 1.3], dtype=torch.float64)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    pyro.set_rng_seed(0)
    out = elbo_surgery(lg.model, guide, x, num_samples=200)
    exact = torch.distributions.kl_divergence(
        dist.Normal(loc, scale).to_event(1),
        dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1),
    )
    assert abs(float(out["marginal_kl"] - exact)) < 4 * float(out["stderr_marginal_kl"])
    torch.testing.assert_close(
        out["mutual_information"], torch.zeros((), dtype=torch.float64), atol=1e-9, rtol=0
    )
    torch.testing.assert_close(marginal_kl(lg.model, guide, x, num_samples=3).shape, torch.Size([]))


def test_low_posterior_samples_are_where_the_aggregate_posterior_is_thin():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(100)

    def narrow_guide(x):  # aggregate posterior concentrated near (1, 1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.ones_like(x[:, :2]), 0.3).to_event(1))

    latents, log_qz = low_posterior_samples(
        lg.model, narrow_guide, x, num_prior_samples=1000, num_keep=10
    )
    assert latents["z"].shape == (10, 2) and log_qz.shape == (10,)
    assert bool((log_qz[1:] >= log_qz[:-1]).all())
    # far from (1, 1): farther than a typical prior draw
    dist_to_mode = (latents["z"] - 1).norm(dim=-1)
    assert float(dist_to_mode.min()) > 2.0
    expected = (
        dist.Normal(torch.ones(2, dtype=torch.float64), 0.3).to_event(1).log_prob(latents["z"])
    )
    torch.testing.assert_close(log_qz, expected)


def test_metrics_reject_models_they_cannot_evaluate():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(4)

    def no_latent(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="no latent"):
        posterior_fisher_divergence(no_latent, lambda x: None, x)

    def no_plate_model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample(
            "x", dist.Normal(z[..., None, None] + torch.zeros_like(x), 1.0).to_event(2), obs=x
        )

    def no_plate_guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="data plate"):
        elbo_surgery(no_plate_model, no_plate_guide, x)
    # one data point without a plate is fine for the per-point metrics
    assert negative_elbo(no_plate_model, no_plate_guide, x).shape == (1,)
