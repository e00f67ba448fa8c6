import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution

from pyro_vsm.datasets import LinearGaussian
from pyro_vsm.infer.traces import trace_scores
from pyro_vsm.ops.scores import (
    autograd_score,
    exact_laplacian,
    hutchinson_laplacian,
    score_and_laplacian,
)

D = torch.float64


def _normal_case():
    loc = torch.randn(4, 3, dtype=D)
    scale = torch.rand(4, 3, dtype=D) + 0.5
    x = torch.randn(4, 3, dtype=D)
    return loc, scale, x


@pytest.mark.parametrize("laplacian", ["auto", "exact", "hutchinson"])
def test_normal_to_event_score_and_laplacian(laplacian):
    loc, scale, x = _normal_case()
    fn = dist.Normal(loc, scale).to_event(1)
    score, lap = score_and_laplacian(fn, x, laplacian=laplacian)
    assert torch.allclose(score, -(x - loc) / scale**2)
    if laplacian != "hutchinson":  # Hutchinson is checked for unbiasedness below
        assert torch.allclose(lap, -(scale**-2).sum(-1))
    assert lap.shape == (4,)


def test_univariate_normal_per_element():
    loc, scale, x = _normal_case()
    score, lap = score_and_laplacian(dist.Normal(loc, scale), x)
    assert torch.allclose(score, -(x - loc) / scale**2)
    assert torch.allclose(lap, -(scale**-2))


def test_expanded_normal_broadcasts_parameters():
    loc = torch.randn(3, dtype=D)
    scale = torch.tensor(0.7, dtype=D)
    fn = ExpandedDistribution(dist.Normal(loc, scale).to_event(1), torch.Size([5]))
    x = torch.randn(5, 3, dtype=D)
    score, lap = score_and_laplacian(fn, x)
    assert score.shape == (5, 3) and lap.shape == (5,)
    assert torch.allclose(score, -(x - loc) / 0.49)
    assert torch.allclose(lap, torch.full((5,), -3 / 0.49, dtype=D))


@pytest.mark.parametrize("event_dim", [0, 1, 2])
@pytest.mark.parametrize("scale_shape", [(), (3,), (4, 1), (5, 4, 3)])
def test_broadcast_normal_scale_matches_autograd(scale_shape, event_dim):
    # a scale broadcast to the data (one γ for all pixels) is read once per distinct value:
    # values, Laplacians and their gradients must equal the autograd ones
    loc = torch.randn(5, 4, 3, dtype=D)
    scale = (torch.rand(scale_shape, dtype=D) + 0.3).requires_grad_(True)
    fn = dist.Normal(loc, scale)
    fn = fn.to_event(event_dim) if event_dim else fn.expand((2, 5, 4, 3))
    x = torch.randn(5, 4, 3, dtype=D)
    score, lap = score_and_laplacian(fn, x)
    auto, leaf = autograd_score(fn, x)
    auto_lap = exact_laplacian(auto, leaf, event_dim)
    assert score.shape == auto.shape and lap.shape == auto_lap.shape
    assert torch.allclose(score, auto) and torch.allclose(lap, auto_lap)
    (g,) = torch.autograd.grad(lap.sum() + score.pow(2).sum(), scale)
    (g_auto,) = torch.autograd.grad(auto_lap.sum() + auto.pow(2).sum(), scale)
    assert torch.allclose(g, g_auto)


def test_multivariate_normal_closed_form_matches_autograd():
    L = torch.tril(torch.randn(2, 3, 3, dtype=D), -1) + torch.diag_embed(
        torch.rand(2, 3, dtype=D) + 1
    )
    loc = torch.randn(2, 3, dtype=D)
    fn = dist.MultivariateNormal(loc, scale_tril=L)
    x = torch.randn(4, 2, 3, dtype=D)
    score, lap = score_and_laplacian(fn.expand([4, 2]), x)
    prec = torch.linalg.inv(L @ L.mT)
    assert torch.allclose(score, -(prec @ (x - loc).unsqueeze(-1)).squeeze(-1))
    assert torch.allclose(lap, -torch.diagonal(prec, dim1=-2, dim2=-1).sum(-1).expand(4, 2))
    s_auto, leaf = autograd_score(fn.expand([4, 2]), x)
    assert torch.allclose(s_auto, score)
    assert torch.allclose(exact_laplacian(s_auto, leaf, 1), lap)


def _student_t_truth(x, df, loc, scale):
    r = x - loc
    denom = df * scale**2 + r**2
    score = -(df + 1) * r / denom
    lap = (-(df + 1) * (df * scale**2 - r**2) / denom**2).sum(-1)
    return score, lap


@pytest.mark.parametrize("laplacian", ["auto", "exact"])
def test_autograd_path_against_hand_derived_student_t(laplacian):
    df, loc, scale = 4.0, torch.randn(3, dtype=D), torch.rand(3, dtype=D) + 0.5
    fn = dist.StudentT(df, loc, scale).expand([6, 3]).to_event(1)
    x = torch.randn(6, 3, dtype=D) * 2
    score, lap = score_and_laplacian(fn, x, laplacian=laplacian)
    s_true, l_true = _student_t_truth(x, df, loc, scale)
    assert torch.allclose(score, s_true)
    assert torch.allclose(lap, l_true)


@pytest.mark.parametrize("family", ["mvn", "student_t"])
def test_hutchinson_is_unbiased(family):
    torch.manual_seed(0)
    d = 6
    loc, scale = torch.randn(d, dtype=D), torch.rand(d, dtype=D) + 0.5
    x = torch.randn(2, d, dtype=D)
    if family == "mvn":  # full Hessian: the estimator has non-zero variance
        L = torch.tril(torch.randn(d, d, dtype=D), -1) + torch.diag(scale)
        fn = dist.MultivariateNormal(loc, scale_tril=L).expand([2])
        truth = -torch.linalg.inv(L @ L.T).trace().expand(2)
    else:
        fn = dist.StudentT(3.0, loc, scale).expand([2, d]).to_event(1)
        truth = _student_t_truth(x, 3.0, loc, scale)[1]
    score, leaf = autograd_score(fn, x)
    n = 4000
    draws = torch.stack([hutchinson_laplacian(score, leaf, 1).detach() for _ in range(n)])
    mean, se = draws.mean(0), draws.std(0) / n**0.5
    # unbiased: within 4 standard errors of the exact trace (fixed seed)
    assert ((mean - truth).abs() < 4 * se + 1e-9).all(), (mean, truth, se)
    if family == "mvn":
        assert (draws.std(0) > 0.1).all()  # it really is stochastic


def _wrap(fn, S):
    return pyro.plate("particles", S, dim=-2)(fn) if S > 1 else fn


def _scale_guide(lg, B, d):
    """A guide whose scale depends on x: s(x) = exp(x B^T + d)."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ lg.A.T + lg.c, (x @ B.T + d).exp()).to_event(1))

    return guide


@pytest.mark.parametrize("S", [1, 3])
@pytest.mark.parametrize("x_dependent_scale", [False, True])
def test_trace_scores_per_particle_and_data_point(S, x_dependent_scale):
    lg = LinearGaussian(dx=3, dz=2)
    x = lg.sample_data(5)
    B = torch.randn(2, 3, dtype=D) * 0.3
    d0 = torch.randn(2, dtype=D) * 0.1
    guide = _scale_guide(lg, B, d0) if x_dependent_scale else lg.guide
    st = trace_scores(
        _wrap(lg.model, S),
        _wrap(guide, S),
        (x,),
        {},
        latent_mode="detach",
        need_z_scores=True,
        need_x_scores=True,
        need_laplacian=True,
        need_guide_x_scores=True,
        num_vectorized=S,
        max_plate_nesting=2 if S > 1 else 1,
    )
    z = st.latents[0].value.detach()
    assert z.shape == ((S, 5, 2) if S > 1 else (5, 2))
    m = x @ lg.A.T + lg.c
    s = (x @ B.T + d0).exp() if x_dependent_scale else lg.s
    obs = st.observed[0]
    # ∇ₓ log p(x|z) = -(x - Wz - b)/γ, Δ = -d/γ, per particle and data point
    assert torch.allclose(obs.score_p, -(x - z @ lg.W.T - lg.b) / lg.gamma)
    assert torch.allclose(obs.laplacian, torch.full(z.shape[:-1], -3 / lg.gamma.item(), dtype=D))
    # ∇ₓ log q(z|x) at fixed z
    u = (z - m) / s
    sq = (u / s) @ lg.A
    if x_dependent_scale:
        sq = sq + (u**2 - 1) @ B
    assert obs.score_q.shape == z.shape[:-1] + (3,)
    assert torch.allclose(obs.score_q, sq)
    # ∇_z log q and ∇_z log p(x, z)
    lat = st.latents[0]
    assert torch.allclose(lat.score_q, -(z - m) / s**2)
    assert torch.allclose(lat.score_p, -z + (x - z @ lg.W.T - lg.b) @ lg.W / lg.gamma)


def test_trace_scores_under_subsampled_plate():
    """The guide indexes the full data set with the plate's subsample indices."""
    lg = LinearGaussian(dx=3, dz=2)
    data = lg.sample_data(20)

    def model(data):
        with pyro.plate("data", data.shape[0], subsample_size=6) as ind:
            xb = data.index_select(0, ind)
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=D), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.b, lg.gamma.sqrt()).to_event(1), obs=xb)

    def guide(data):
        with pyro.plate("data", data.shape[0], subsample_size=6) as ind:
            xb = data.index_select(0, ind)
            pyro.sample("z", dist.Normal(xb @ lg.A.T + lg.c, lg.s).to_event(1))

    st = trace_scores(
        model,
        guide,
        (data,),
        {},
        latent_mode="detach",
        need_x_scores=True,
        need_laplacian=True,
        need_guide_x_scores=True,
        max_plate_nesting=1,
    )
    obs = st.observed[0]
    xb = obs.value
    z = st.guide_trace.nodes["z"]["value"]
    m = xb @ lg.A.T + lg.c
    assert obs.score_q.shape == (6, 3)
    assert torch.allclose(obs.score_q, ((z - m) / lg.s**2) @ lg.A)
    assert torch.allclose(obs.score_p, -(xb - z @ lg.W.T - lg.b) / lg.gamma)
    assert obs.scale == pytest.approx(20 / 6)
