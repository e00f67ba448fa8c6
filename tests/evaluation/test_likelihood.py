import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.evaluation import (
    AISOptions,
    ais_log_likelihood,
    annealing_schedule,
    importance_log_likelihood,
    log_partition,
    psis_khat,
)
from pyro_vsm.evaluation._tracing import InflateScale

SHAPES = [(3, 2), (5, 1), (4, 3)]


@pytest.mark.parametrize("dx,dz", SHAPES)
def test_importance_with_exact_posterior_is_exact(dx, dz):
    lg = LinearGaussian(dx=dx, dz=dz, seed=dx + dz)
    x = lg.sample_data(7)
    est, diag = importance_log_likelihood(
        lg.model, lg.exact_guide, x, num_samples=3, return_diagnostics=True
    )
    assert est.shape == (7,)
    torch.testing.assert_close(est, lg.log_marginal(x), rtol=0, atol=1e-9)
    assert diag.log_weights.shape == (3, 7)
    torch.testing.assert_close(diag.ess, torch.full_like(diag.ess, 3.0))
    assert diag.data_plate == "data"


@pytest.mark.parametrize("scale", [1.0, math.sqrt(2)])
def test_importance_converges_with_an_approximate_guide(scale):
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(5)
    est, diag = importance_log_likelihood(
        lg.model,
        lg.guide,
        x,
        num_samples=50000,
        proposal_scale=scale,
        return_diagnostics=True,
        chunk_size=7000,
    )
    err = est - lg.log_marginal(x)
    assert bool((err.abs() < 4 * diag.stderr + 1e-3).all()), (err, diag.stderr)
    assert bool((diag.khat < 0.7).all())


def test_poor_guide_underestimates_and_khat_flags_it():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(6)

    def narrow_guide(x):
        mu, _ = lg.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(mu + 0.5, 0.05).to_event(1))

    est, diag = importance_log_likelihood(
        lg.model, narrow_guide, x, num_samples=2000, return_diagnostics=True
    )
    exact = lg.log_marginal(x)
    assert bool((est < exact - 0.5).all())
    assert bool((diag.khat > 0.7).all()), diag.khat
    assert bool((diag.ess < 50).all())


def test_proposal_scale_inflates_every_location_scale_family():
    loc, scale = torch.zeros(3), torch.ones(3) * 0.5
    cases = [
        dist.Normal(loc, scale),
        dist.Normal(loc, scale).to_event(1),
        dist.Normal(0.0, 0.5).expand([3]),
        dist.StudentT(3.0, loc, scale),
        dist.Laplace(loc, scale),
        dist.MultivariateNormal(loc, scale_tril=torch.diag(scale)),
    ]

    def run(fn):
        def guide():
            return pyro.sample("z", fn)

        tr = pyro.poutine.trace(InflateScale(2.0)(guide)).get_trace()
        return tr.nodes["z"]["fn"]

    for fn in cases:
        inflated = run(fn)
        assert inflated.batch_shape == fn.batch_shape and inflated.event_shape == fn.event_shape
        torch.testing.assert_close(inflated.variance, 4 * fn.variance)
    with pytest.raises(ValueError, match="location-scale.*'z'.*Gamma"):
        run(dist.Gamma(2.0, 1.0))
    with pytest.raises(ValueError, match="proposal_scale"):
        InflateScale(-1.0)


def test_psis_khat_matches_pyro_on_one_column():
    from pyro.ops.stats import fit_generalized_pareto

    torch.manual_seed(0)
    lw = dist.StudentT(2.0).sample((4000, 2)).double()
    k = psis_khat(lw)
    assert k.shape == (2,)
    column = torch.sort(lw[:, 0] - lw[:, 0].max())[0]
    cut = column[-int(math.ceil(min(0.2 * 4000, 3 * math.sqrt(4000)))) - 1]
    tail = column[column > cut]
    expected, _ = fit_generalized_pareto(tail.exp() - cut.exp())
    assert abs(float(k[0]) - expected) < 1e-9


def subsampled_model(lg, x):
    W, b, gamma = lg.decoder_params()
    with pyro.plate("data", x.shape[0], subsample_size=4) as idx:
        z = pyro.sample(
            "z", dist.Normal(torch.zeros_like(b[: lg.dz]), 1.0).expand([lg.dz]).to_event(1)
        )
        pyro.sample(
            "x", dist.Normal(z @ W.T + b, gamma.sqrt()).to_event(1), obs=x.index_select(0, idx)
        )


def subsampled_guide(lg, x):
    with pyro.plate("data", x.shape[0], subsample_size=4) as idx:
        mu, P = lg.posterior(x.index_select(0, idx))
        pyro.sample("z", dist.MultivariateNormal(mu, precision_matrix=P))


def test_subsampled_plate_gives_one_estimate_per_subsampled_point():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(10)
    pyro.set_rng_seed(3)
    est, diag = importance_log_likelihood(
        lambda x: subsampled_model(lg, x),
        lambda x: subsampled_guide(lg, x),
        x,
        num_samples=5,
        return_diagnostics=True,
        chunk_size=2,
    )
    assert est.shape == (4,)
    exact = lg.log_marginal(x)
    # the estimates are exact for four of the ten points (the subsample)
    matches = [(exact - e).abs().min() < 1e-9 for e in est]
    assert all(bool(m) for m in matches)


def test_ais_holds_the_subsample_fixed():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(10)
    est = ais_log_likelihood(
        lambda x: subsampled_model(lg, x), x, num_temperatures=200, num_chains=16
    )
    exact = lg.log_marginal(x)
    nearest = torch.stack([(exact - e).abs().min() for e in est])
    assert est.shape == (4,) and bool((nearest < 0.3).all())


@pytest.mark.parametrize("dx,dz", SHAPES)
def test_ais_from_the_prior_is_within_005_nats(dx, dz):
    pyro.set_rng_seed(dx * 10 + dz)
    lg = LinearGaussian(dx=dx, dz=dz, seed=dx + dz)
    x = lg.sample_data(8)
    est, diag = ais_log_likelihood(
        lg.model, x, num_temperatures=1000, num_chains=64, return_diagnostics=True
    )
    err = est - lg.log_marginal(x)
    assert err.abs().mean() < 0.05, err
    assert bool((err.abs() < 5 * diag.stderr + 0.02).all()), (err, diag.stderr)
    assert diag.log_weights.shape == (64, 8)
    assert bool(((diag.acceptance_rate > 0.5) & (diag.acceptance_rate < 0.9)).all())
    assert diag.num_temperatures == 1000


def test_ais_from_the_guide_and_linear_schedule():
    pyro.set_rng_seed(1)
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(6)
    est = ais_log_likelihood(
        lg.model,
        x,
        guide=lg.guide,
        num_temperatures=500,
        num_chains=32,
        schedule="linear",
        chain_chunk_size=16,
    )
    assert (est - lg.log_marginal(x)).abs().mean() < 0.05


def test_ais_with_a_constrained_latent():
    # z ~ Gamma(a, b) (precision), x | z ~ N(0, 1/z): x is Student-t with 2a dof, scale sqrt(b/a)
    a, b = 2.0, 2.0

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(torch.full_like(x, a), b))
            pyro.sample("x", dist.Normal(0.0, z.rsqrt()), obs=x)

    pyro.set_rng_seed(0)
    x = torch.tensor([-2.0, -0.3, 0.0, 1.0, 3.0], dtype=torch.float64)
    est = ais_log_likelihood(model, x, num_temperatures=500, num_chains=32)
    exact = dist.StudentT(2 * a, 0.0, math.sqrt(b / a)).log_prob(x)
    assert (est - exact).abs().max() < 0.05


def issue_model(seed):
    """The setting of issue 19: d_x = 6, d_z = 3, noise variance 0.2, 20 points."""
    lg = LinearGaussian(dx=6, dz=3, seed=seed)
    lg.gamma = torch.tensor(0.2, dtype=torch.float64)
    return lg, lg.sample_data(20)


def test_adaptive_ais_from_the_prior_reaches_005_nats_at_500_temperatures():
    # issue 19's goal: mean |error| <= 0.05 nats over five random models, 500 temperatures (pilot
    # included), 16 chains from the prior. Measured: 0.043 here, 0.0425 +- 0.002 over 20 runs
    # (the sigmoid schedule with exact transitions: 0.049); an average of five runs varies by
    # about 0.0045
    errors = []
    for seed in range(5):
        lg, x = issue_model(seed)
        pyro.set_rng_seed(seed)
        est, diag = ais_log_likelihood(
            lg.model, x, num_temperatures=500, num_chains=16, return_diagnostics=True
        )
        assert diag.num_temperatures == 500 and diag.log_weights.shape == (16, 20)
        errors.append((est - lg.log_marginal(x)).abs().mean())
    assert float(sum(errors)) / 5 <= 0.05, errors


def test_options_object_and_keyword_arguments_agree():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(4)
    options = AISOptions(num_temperatures=30, num_chains=4, schedule="linear", num_leapfrog=2)
    pyro.set_rng_seed(0)
    a = ais_log_likelihood(lg.model, x, options=options)
    pyro.set_rng_seed(0)
    b = ais_log_likelihood(
        lg.model, x, num_temperatures=30, num_chains=4, schedule="linear", num_leapfrog=2
    )
    pyro.set_rng_seed(0)
    c = ais_log_likelihood(lg.model, x, options=options.replace(num_chains=8), num_chains=4)
    assert torch.equal(a, b) and torch.equal(a, c)
    # one per-point schedule tensor: each column is that point's schedule
    betas = torch.stack(
        [
            annealing_schedule(30, k, dtype=torch.float64)
            for k in ("sigmoid", "linear", "sigmoid", "linear")
        ],
        1,
    )
    est = ais_log_likelihood(lg.model, x, options=options.replace(schedule=betas))
    assert est.shape == (4,) and bool(torch.isfinite(est).all())
    with pytest.raises(ValueError, match="schedule tensor"):
        ais_log_likelihood(lg.model, x, options=options.replace(schedule=betas[:, :3]))
    with pytest.raises(ValueError, match="options must be an AISOptions"):
        ais_log_likelihood(lg.model, x, options={"num_chains": 4})
    with pytest.raises(ValueError, match="num_chains"):
        log_partition(Quadratic([1.0]), method="ais", options=options, num_chains=0)


@pytest.mark.parametrize("schedule", ["sigmoid", "linear"])
def test_annealing_schedule(schedule):
    betas = annealing_schedule(10, schedule, dtype=torch.float64)
    assert betas.shape == (11,) and betas[0] == 0 and betas[-1] == 1
    assert bool((betas[1:] > betas[:-1]).all())
    with pytest.raises(ValueError, match="schedule"):
        annealing_schedule(10, "cosine")


class Quadratic(torch.nn.Module):
    """E(z) = ½ zᵀ diag(1/v) z; Z = (2π)^{d/2} √(Π v)."""

    def __init__(self, variances, exact=True):
        super().__init__()
        self.register_buffer("v", torch.as_tensor(variances, dtype=torch.float64))
        self.event_shape = torch.Size([len(variances)])
        self.exact = exact

    def forward(self, z):
        return 0.5 * (z.pow(2) / self.v).sum(-1)

    def log_partition(self):
        if not self.exact:
            raise NotImplementedError
        return 0.5 * len(self.v) * math.log(2 * math.pi) + 0.5 * self.v.log().sum()


def test_log_partition_exact_auto_and_ais():
    pyro.set_rng_seed(0)
    energy = Quadratic([0.5, 2.0, 4.0])
    exact = energy.log_partition()
    assert log_partition(energy) is not None
    torch.testing.assert_close(log_partition(energy, method="exact"), exact)
    value, diag = log_partition(energy, method="ais", num_temperatures=500, return_diagnostics=True)
    assert value.dtype == torch.float64
    assert abs(float(value - exact)) < max(4 * float(diag.stderr), 0.02)
    assert diag.log_weights.shape == (64,)
    # auto falls back to AIS when the energy cannot give the exact value
    fallback = log_partition(Quadratic([0.5, 2.0, 4.0], exact=False), num_temperatures=500)
    assert abs(float(fallback - exact)) < 0.1


def test_log_partition_errors():
    with pytest.raises(ValueError, match="event_shape"):
        log_partition(lambda z: z.pow(2).sum(-1), method="ais")
    with pytest.raises(ValueError, match="no log_partition"):
        log_partition(lambda z: z.pow(2).sum(-1), event_shape=(2,), method="exact")
    with pytest.raises(ValueError, match="expected"):
        log_partition(lambda z: z.pow(2), event_shape=(2,), num_temperatures=2)
    with pytest.raises(ValueError, match="method"):
        log_partition(Quadratic([1.0]), method="nested")


def test_errors_name_the_site_or_argument():
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(4)

    def no_obs(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no observed"):
        importance_log_likelihood(no_obs, no_obs, x)

    def global_latent(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w, 1.0).expand([3]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="'w' is outside the data plate 'data'"):
        ais_log_likelihood(global_latent, x)

    def empty_guide(x):
        pass

    with pytest.raises(ValueError, match="no site for model latent.*'z'"):
        importance_log_likelihood(lg.model, empty_guide, x)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="argument 0 of the model has non-finite"):
        importance_log_likelihood(lg.model, lg.guide, bad)
    with pytest.raises(ValueError, match="num_samples"):
        importance_log_likelihood(lg.model, lg.guide, x, num_samples=0)
    with pytest.raises(ValueError, match="data_plate='pixels'"):
        importance_log_likelihood(lg.model, lg.guide, x, data_plate="pixels")


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimators_follow_the_data_dtype_and_device(dtype, device):
    pyro.set_rng_seed(0)
    lg = LinearGaussian(dx=3, dz=2, dtype=dtype, device=device)
    x = lg.sample_data(4)
    exact = lg.log_marginal(x)
    est, diag = importance_log_likelihood(
        lg.model, lg.exact_guide, x, num_samples=4, return_diagnostics=True
    )
    assert est.dtype == dtype and est.device == x.device and diag.khat.device == x.device
    torch.testing.assert_close(est, exact, atol=1e-4, rtol=0)
    est, diag = ais_log_likelihood(
        lg.model, x, num_temperatures=300, num_chains=32, return_diagnostics=True
    )
    assert est.dtype == dtype and est.device == x.device
    assert diag.step_size.device == x.device
    assert (est - exact).abs().mean() < 0.1
