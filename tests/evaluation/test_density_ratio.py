"""density_ratio_kl (Algorithm 3), density_model_kl (Algorithm 4) and aggregate_posterior_samples
against closed-form Gaussian KLs and Algorithm 2."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions as D

from pyro_vsm.evaluation import (
    aggregate_posterior_samples,
    density_model_kl,
    density_ratio_kl,
    elbo_surgery,
)

# A small classifier suffices for Gaussians. One estimate scatters by about 0.05 around its mean
# (the Monte Carlo error of 800 held-out samples, 0.03, plus the classifier's training noise), so
# single runs get TOL and the mean of REPEATS independent runs MEAN_TOL (about 10 % of the KLs).
SMALL = dict(hidden=32, num_layers=2, steps=600, batch_size=256, lr=3e-3)
TOL, MEAN_TOL, REPEATS = 0.15, 0.08, 4


def gaussians(dim):
    if dim == 1:
        q = D.Independent(D.Normal(torch.tensor([1.0]), torch.tensor([0.7])), 1)
        p = D.Independent(D.Normal(torch.tensor([0.0]), torch.tensor([1.0])), 1)
    else:
        q = D.MultivariateNormal(torch.tensor([1.0, -0.5]), torch.tensor([[1.2, 0.4], [0.4, 0.8]]))
        p = D.MultivariateNormal(torch.zeros(2), torch.eye(2))
    return q, p


@pytest.mark.parametrize("dim", [1, 2])
def test_density_ratio_kl_recovers_gaussian_kl(dim):
    q, p = gaussians(dim)
    exact, reverse = D.kl_divergence(q, p).item(), D.kl_divergence(p, q).item()
    estimates, reverses = [], []
    for seed in range(REPEATS):
        torch.manual_seed(seed)
        zq, zp = q.sample((4000,)), p.sample((4000,))
        est, diag = density_ratio_kl(zq, zp, seed=seed, return_diagnostics=True, **SMALL)
        assert isinstance(est, float)
        assert abs(est - exact) < TOL, (est, exact)
        assert 0.6 < diag.accuracy < 0.9 and diag.heldout_loss < math.log(2)
        assert abs(diag.mean_ratio_p - 1) < 0.2
        estimates.append(est)
        reverses.append(diag.reverse_kl)
    assert abs(sum(estimates) / REPEATS - exact) < MEAN_TOL, (estimates, exact)
    # the same classifier's E_p[logit] estimates the other direction (the labels are p = 1)
    assert abs(sum(reverses) / REPEATS - reverse) < 2 * MEAN_TOL, (reverses, reverse)
    assert diag.num_train == (3200, 3200) and diag.num_heldout == (800, 800)
    assert diag.logits_q.shape == (800,) and diag.losses.shape == (SMALL["steps"],)
    # the trained classifier gives the held-out logits back on raw samples
    assert diag.classifier(zq[:5]).shape == (5,)


def test_density_ratio_kl_is_zero_for_equal_distributions_and_seeded():
    torch.manual_seed(3)
    z1, z2 = torch.randn(3000, 2), torch.randn(3000, 2)
    state = torch.get_rng_state()
    est = density_ratio_kl(z1, z2, seed=5, **SMALL)
    assert torch.equal(state, torch.get_rng_state()), "a seeded call must not use the global RNG"
    assert abs(est) < 0.05, est
    assert density_ratio_kl(z1, z2, seed=5, **SMALL) == est
    assert density_ratio_kl(z1, z2, generator=torch.Generator().manual_seed(5), **SMALL) == est
    assert density_ratio_kl(z1, z2, seed=6, **SMALL) != est


def test_density_ratio_kl_variants_run_in_float64():
    torch.manual_seed(4)
    q, p = gaussians(2)
    zq, zp = q.sample((1000,)).double(), p.sample((1000,)).double()
    exact = D.kl_divergence(q, p).item()
    for kw in (
        dict(gradient_penalty=0.1),
        dict(dropout=0.1),
        dict(activation_noise=0.1),
        dict(hidden=(16, 16, 16), num_layers=None),
    ):
        opts = {**SMALL, "steps": 300, **kw}
        est, diag = density_ratio_kl(zq, zp, seed=0, return_diagnostics=True, **opts)
        assert diag.logits_q.dtype == torch.float64
        assert abs(est - exact) < 0.3, (kw, est, exact)


def test_density_model_kl_gmm_and_flow_recover_gaussian_kl():
    torch.manual_seed(5)
    q, p = gaussians(2)
    zq = q.sample((4000,))
    exact = D.kl_divergence(q, p).item()
    est, diag = density_model_kl(
        zq,
        p.log_prob,
        "gmm",
        num_components=1,
        covariance_type="full",
        seed=0,
        return_diagnostics=True,
    )
    assert abs(est - exact) < 4 * diag.stderr + 0.02, (est, exact, diag.stderr)
    # precomputed log p values aligned with the samples give the same estimate
    assert density_model_kl(
        zq, p.log_prob(zq), "gmm", num_components=1, covariance_type="full", seed=0
    ) == pytest.approx(est)
    est_flow = density_model_kl(zq, p.log_prob, "flow", steps=300, seed=0)
    assert abs(est_flow - exact) < TOL, (est_flow, exact)


def test_density_model_kl_is_a_lower_bound_for_a_poor_model():
    # a bimodal q fitted by one Gaussian: E_q[log q_hat - log p] = KL - KL[q||q_hat] < KL
    torch.manual_seed(6)
    zq = torch.cat([torch.randn(2000, 1) * 0.3 - 2, torch.randn(2000, 1) * 0.3 + 2])
    p = D.Normal(0.0, 1.0)

    def log_p(z):
        return p.log_prob(z).sum(-1)

    one = density_model_kl(zq, log_p, num_components=1, seed=0)
    two = density_model_kl(zq, log_p, num_components=2, seed=0)
    mix = D.MixtureSameFamily(
        D.Categorical(torch.ones(2)), D.Normal(torch.tensor([-2.0, 2.0]), 0.3)
    )
    exact = (mix.log_prob(zq[:, 0]) - p.log_prob(zq[:, 0])).mean().item()  # MC, 4000 samples
    assert one < exact - 0.5 and abs(two - exact) < 0.1, (one, two, exact)


def _toy(x):
    # z ~ N(0, I2), x ~ N(z, I2); guide q(z|x) = N(0.8 x, 0.5): an aggregate posterior that is
    # close to N(0, (0.64 * 2 + 0.25) I) for many data points
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def _toy_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.8 * x, 0.5).to_event(1))


def test_aggregate_posterior_samples_layout_and_agreement_with_algorithm_2():
    torch.manual_seed(7)
    x = torch.randn(400, 2) * math.sqrt(2.0)
    agg = aggregate_posterior_samples(_toy, _toy_guide, x, num_samples=5)
    assert agg.q_samples.shape == (2000, 2) and agg.p_samples.shape == (2000, 2)
    assert agg.sites == [("z", 2)]
    # row s * N + n is a draw from q(z | x_n)
    per_point = agg.q_samples.reshape(5, 400, 2)
    assert (per_point.mean(0) - 0.8 * x).abs().max() < 4 * 0.5 / math.sqrt(5)
    torch.testing.assert_close(agg.log_p, D.Normal(0.0, 1.0).log_prob(agg.q_samples).sum(-1))
    assert agg.p_samples.mean(0).abs().max() < 0.15
    assert (agg.p_samples.std(0) - 1).abs().max() < 0.1
    mc = elbo_surgery(_toy, _toy_guide, x, num_samples=5)["marginal_kl"].item()
    gmm = density_model_kl(agg.q_samples, agg.log_p, num_components=1, seed=0)
    ratio = density_ratio_kl(agg.q_samples, agg.p_samples, seed=0, **SMALL)
    assert abs(gmm - mc) < 0.1 and abs(ratio - mc) < 2 * TOL, (gmm, ratio, mc)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(q_samples=torch.zeros(5, 2, 2)), "q_samples must have shape"),
        (dict(p_samples=torch.zeros(5, 3)), "same number of features"),
        (dict(q_samples=torch.tensor([[0.0, float("nan")]] * 5)), "q_samples contains non-finite"),
        (dict(p_samples=torch.zeros(5, 2, dtype=torch.long)), "p_samples must have a real"),
        (dict(q_samples=torch.zeros(1, 2)), "q_samples needs at least 2"),
        (dict(steps=True), "steps must be an integer"),
        (dict(steps=0), "steps must be an integer"),
        (dict(hidden=(8, 8), num_layers=2), "num_layers must be None"),
        (dict(hidden=()), "hidden must name"),
        (dict(num_layers=1.5), "num_layers must be an integer"),
        (dict(holdout=1.0), "holdout must be a number"),
        (dict(dropout=-0.1), "dropout must be a number"),
        (dict(activation_noise=float("inf")), "activation_noise must be a number"),
        (dict(gradient_penalty=True), "gradient_penalty must be a number"),
        (dict(betas=(0.9,)), "betas must be a pair"),
        (dict(seed=1, generator=torch.Generator()), "at most one of seed and generator"),
        (dict(generator=1), "generator must be a torch.Generator"),
        (dict(standardize="yes"), "standardize must be"),
    ],
)
def test_density_ratio_kl_bad_input(kwargs, match):
    args = dict(q_samples=torch.randn(20, 2), p_samples=torch.randn(20, 2), steps=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        density_ratio_kl(args.pop("q_samples"), args.pop("p_samples"), **args)


def test_density_ratio_kl_samples_must_be_tensors():
    with pytest.raises(TypeError, match="p_samples must be a torch.Tensor"):
        density_ratio_kl(torch.randn(20, 2), [[0.0, 0.0]] * 5, steps=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(q_samples=torch.full((10, 2), float("inf"))), "q_samples contains non-finite"),
        (dict(model="kde"), "model must be one of"),
        (dict(log_p=torch.zeros(9)), "log_p must be a callable or a tensor of shape"),
        (dict(log_p="normal"), "log_p must be a callable or a tensor"),
        (dict(log_p=lambda z: z), r"log_p\(z\) must give one value per sample"),
        (dict(log_p=lambda z: torch.full(z.shape[:1], float("nan"))), "non-finite values"),
        (dict(num_components=11), "exceeds the 8 training samples"),
        (dict(num_components=0), "num_components must be an integer"),
        (dict(covariance_type="diagonal"), "covariance_type must be"),
        (dict(model="flow", steps=-1), "steps must be an integer"),
        (dict(model="flow", hidden_features=64), "hidden_features must be a sequence"),
        (dict(holdout=0), "holdout must be a number"),
    ],
)
def test_density_model_kl_bad_input(kwargs, match):
    args = dict(q_samples=torch.randn(10, 2), log_p=lambda z: -0.5 * z.pow(2).sum(-1), model="gmm")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        density_model_kl(args.pop("q_samples"), args.pop("log_p"), args.pop("model"), **args)
