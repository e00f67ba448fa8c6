"""Tests of the two-sample statistics in :mod:`pyro_vsm.ops.two_sample`."""

import itertools
import math

import pytest
import torch

from pyro_vsm.ops.smooth_knn import (
    _cross_weight,
    _cross_weight_permuted,
    _k_subset_marginals,
    _permutation_null_moments,
    smooth_knn_marginals,
    smooth_knn_statistic,
)
from pyro_vsm.ops.two_sample import (
    _mmd2_from_gram,
    _mmd2_permuted,
    _pooled_gram,
    _random_membership,
    mmd,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape, dtype=F64):
    return torch.randn(*shape, generator=gen, dtype=dtype)


def _naive_dist(a, b):
    return math.sqrt(sum((float(u) - float(v)) ** 2 for u, v in zip(a, b, strict=True)))


# ------------------------------------------------------------------------------------------
# MMD


def _naive_mmd2(x, y, k):
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)


def _naive_median_bandwidth(z):
    dists = sorted(_naive_dist(z[i], z[j]) for i in range(len(z)) for j in range(i + 1, len(z)))
    return dists[(len(dists) - 1) // 2]  # lower median, as torch.median


@pytest.mark.parametrize("case", ["rbf_fixed", "rbf_median", "cubic", "callable"])
def test_mmd_matches_naive_double_loop(case):
    gen = _gen(1)
    x, y = _randn(gen, 4, 3), _randn(gen, 5, 3) + 0.5
    d = x.shape[1]

    def rbf(h):
        return lambda a, b: math.exp(-(_naive_dist(a, b) ** 2) / (2 * h * h))

    if case == "rbf_fixed":
        got, k = mmd(x, y, bandwidth=0.7), rbf(0.7)
    elif case == "rbf_median":
        got, k = mmd(x, y), rbf(_naive_median_bandwidth(torch.cat([x, y]).tolist()))
    elif case == "cubic":
        got = mmd(x, y, kernel="cubic")

        def k(a, b):
            return (sum(u * v for u, v in zip(a, b, strict=True)) / d + 1.0) ** 3
    else:
        got = mmd(x, y, kernel=lambda a, b: torch.exp(-torch.cdist(a, b)))

        def k(a, b):
            return math.exp(-_naive_dist(a, b))

    want = _naive_mmd2(x.tolist(), y.tolist(), k)
    assert got.shape == ()
    assert got.dtype == F64
    assert abs(got.item() - want) < 1e-12 * max(1.0, abs(want))


def test_cubic_kernel_hand_checked():
    # k(a, b) = (a.b / 2 + 1)^3: k(x1,x2) = 1, k(y1,y2) = 0.5^3, cross terms 1.5^3, 0.5^3,
    # 1.5^3, 1 (sum 7.875). MMD2_u = 1 + 0.125 - 2 * 7.875 / 4 = -2.8125.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    y = torch.tensor([[1.0, 1.0], [-1.0, 0.0]], dtype=F64)
    assert mmd(x, y, kernel="cubic").item() == pytest.approx(-2.8125, abs=1e-14)
    gram = _pooled_gram(torch.cat([x, y]), "cubic", None)
    assert gram[0, 2].item() == pytest.approx(3.375) and gram[2, 3].item() == pytest.approx(0.125)


def test_mmd_one_dimensional_input_is_a_column():
    gen = _gen(2)
    x, y = _randn(gen, 7), _randn(gen, 9)
    for kernel in ("rbf", "cubic"):
        assert torch.equal(mmd(x, y, kernel=kernel), mmd(x[:, None], y[:, None], kernel=kernel))


def _null_sd(x, y, kernel, num=200, seed=0):
    """Standard deviation of MMD2_u over random relabellings: the estimator's null scale."""
    z = torch.cat([x, y])
    gram = _pooled_gram(z, kernel, None)
    member = _random_membership(num, z.shape[0], x.shape[0], _gen(seed), gram)
    return _mmd2_permuted(gram, member, x.shape[0]).std()


@pytest.mark.parametrize("kernel", ["rbf", "cubic"])
def test_mmd_same_distribution_small_shifted_large(kernel):
    # tolerance from the estimator's scale: the spread of MMD2_u over relabellings of the pooled
    # sample (about 0.5/n for the RBF kernel and 10/n for the cubic one here, n = 200)
    gen = _gen(3)
    x, y = _randn(gen, 200, 3), _randn(gen, 200, 3)
    same = mmd(x, y, kernel=kernel)
    assert abs(same.item()) < 4 * _null_sd(x, y, kernel).item()
    shifted_y = y + torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    shifted = mmd(x, shifted_y, kernel=kernel)
    assert shifted.item() > 10 * _null_sd(x, shifted_y, kernel).item()
    assert shifted.item() > 10 * abs(same.item())


@pytest.mark.parametrize("kernel,bandwidth", [("rbf", 1.0), ("rbf", None), ("cubic", None)])
def test_mmd_unbiased_under_the_null(kernel, bandwidth):
    # the mean over R independent replicates must be within 4 standard errors of 0
    gen = _gen(4)
    reps = torch.stack(
        [
            mmd(_randn(gen, 8, 2), _randn(gen, 11, 2), kernel=kernel, bandwidth=bandwidth)
            for _ in range(600)
        ]
    )
    stderr = reps.std() / math.sqrt(len(reps))
    assert abs(reps.mean().item()) < 4 * stderr.item()
    assert (reps < 0).any()  # an unbiased estimate is negative some of the time


def test_mmd_vectorised_permutations_match_recomputation():
    gen = _gen(5)
    x, y = _randn(gen, 6, 2), _randn(gen, 9, 2)
    z = torch.cat([x, y])
    for kernel in ("cubic", lambda a, b: torch.exp(-torch.cdist(a, b)) + a[:, :1] * 0.1):
        # the second kernel is deliberately non-symmetric
        gram = _pooled_gram(z, kernel, None)
        member = _random_membership(5, 15, 6, _gen(0), gram)
        member[0] = torch.cat([torch.ones(6, dtype=F64), torch.zeros(9, dtype=F64)])
        stats = _mmd2_permuted(gram, member, 6)
        assert stats[0].item() == pytest.approx(mmd(x, y, kernel=kernel).item(), abs=1e-12)
        for b in range(1, 5):
            idx = torch.cat([member[b].nonzero()[:, 0], (1 - member[b]).nonzero()[:, 0]])
            want = _mmd2_from_gram(gram[idx][:, idx], 6)
            assert stats[b].item() == pytest.approx(want.item(), abs=1e-12)


@pytest.mark.parametrize("kernel", ["rbf", "cubic"])
def test_mmd_permutation_pvalue(kernel):
    gen = _gen(6)
    B = 99
    pvals = []
    for _ in range(40):
        stat, p = mmd(
            _randn(gen, 25, 2), _randn(gen, 25, 2), kernel=kernel, num_permutations=B, generator=gen
        )
        assert stat.shape == () and p.shape == () and p.dtype == F64
        assert 1 / (B + 1) <= p.item() <= 1
        pvals.append(p.item())
    pvals = torch.tensor(pvals)
    # roughly uniform under the null: mean 1/2 (sd about 0.05 for 40 replicates)
    assert 0.3 < pvals.mean().item() < 0.7
    assert (pvals <= 0.05).float().mean().item() <= 0.2
    x, y = _randn(gen, 25, 2), _randn(gen, 25, 2) + 2.0
    _, p = mmd(x, y, kernel=kernel, num_permutations=B, generator=_gen(0))
    assert p.item() == pytest.approx(1 / (B + 1))
    # the generator makes the p-value reproducible
    x, y = _randn(gen, 10, 2), _randn(gen, 10, 2)
    p1 = mmd(x, y, kernel=kernel, num_permutations=50, generator=_gen(7))[1]
    p2 = mmd(x, y, kernel=kernel, num_permutations=50, generator=_gen(7))[1]
    assert torch.equal(p1, p2)


@pytest.mark.parametrize("kernel", ["rbf", "cubic"])
def test_mmd_gradient(kernel):
    gen = _gen(8)
    x = _randn(gen, 10, 2).requires_grad_()
    y = (_randn(gen, 12, 2) + 0.5).requires_grad_()
    mmd(x, y, kernel=kernel).backward()
    for t in (x, y):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # exact gradients for a fixed bandwidth (the median heuristic's bandwidth is detached)
    bw = 0.8 if kernel == "rbf" else None
    x = _randn(gen, 4, 2).requires_grad_()
    y = _randn(gen, 5, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: mmd(a, b, kernel=kernel, bandwidth=bw), (x, y))


def test_mmd_with_duplicate_points_has_finite_gradient():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], dtype=F64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=F64)
    mmd(x, y).backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------------------
# smooth k-NN marginals


def _naive_offdiag_dists(z):
    n = len(z)
    return [[_naive_dist(z[i], z[j]) for j in range(n)] for i in range(n)]


def _brute_force_marginals(z, k, alpha):
    n = len(z)
    dist = _naive_offdiag_dists(z)
    out = [[0.0] * n for _ in range(n)]
    for i in range(n):
        others = [j for j in range(n) if j != i]
        subsets = list(itertools.combinations(others, k))
        weights = [math.exp(-alpha * sum(dist[i][j] for j in s)) for s in subsets]
        total = sum(weights)
        for s, w in zip(subsets, weights, strict=True):
            for j in s:
                out[i][j] += w / total
    return torch.tensor(out, dtype=F64)


def test_k1_marginals_are_softmax():
    gen = _gen(9)
    z = _randn(gen, 7, 3)
    alpha = 1.7
    dist = torch.tensor(_naive_offdiag_dists(z.tolist()), dtype=F64)
    logits = (-alpha * dist).masked_fill(torch.eye(7, dtype=torch.bool), -math.inf)
    want = torch.softmax(logits, dim=1)
    torch.testing.assert_close(smooth_knn_marginals(z, k=1, alphas=alpha), want)
    # the general dynamic programme agrees with the softmax shortcut for k = 1
    off = ~torch.eye(7, dtype=torch.bool)
    theta = (-alpha * dist)[off].reshape(7, 6)
    torch.testing.assert_close(_k_subset_marginals(theta, 1), torch.softmax(theta, dim=1))


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_marginals_match_brute_force_enumeration(k, alpha):
    gen = _gen(10)
    z = _randn(gen, 6, 2)
    want = _brute_force_marginals(z.tolist(), k, alpha)
    got = smooth_knn_marginals(z, k=k, alphas=alpha)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_marginals_average_over_alphas_and_default_is_scale_free():
    gen = _gen(11)
    z = _randn(gen, 8, 2)
    both = smooth_knn_marginals(z, k=2, alphas=[0.5, 4.0])
    single = [smooth_knn_marginals(z, k=2, alphas=a) for a in (0.5, 4.0)]
    torch.testing.assert_close(both, (single[0] + single[1]) / 2)
    torch.testing.assert_close(smooth_knn_marginals(z, k=2), smooth_knn_marginals(13.0 * z, k=2))


def test_large_alpha_gives_the_hard_knn_graph():
    gen = _gen(12)
    z = _randn(gen, 10, 2)
    dist = torch.cdist(z, z) + torch.diag(torch.full((10,), math.inf, dtype=F64))
    nearest = dist.topk(4, largest=False)
    hard = torch.zeros(10, 10, dtype=F64).scatter_(1, nearest.indices[:, :3], 1.0)
    # each excluded subset is at least `gap` further away, so its weight is below exp(-40)
    gap = (nearest.values[:, 3] - nearest.values[:, 2]).min().item()
    P = smooth_knn_marginals(z, k=3, alphas=40.0 / gap)
    torch.testing.assert_close(P, hard, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_marginal_rows_sum_to_k(k, dtype):
    gen = _gen(13)
    z = _randn(gen, 20, 3, dtype=dtype)
    P = smooth_knn_marginals(z, k=k)
    assert P.dtype == dtype and P.shape == (20, 20)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(P.sum(1), torch.full((20,), float(k), dtype=dtype), atol=tol, rtol=0)
    assert (P.diagonal() == 0).all() and (P >= 0).all() and (P <= 1 + tol).all()


# ------------------------------------------------------------------------------------------
# permutation moments


def _random_weights(n, seed):
    gen = _gen(seed)
    P = torch.rand(n, n, generator=gen, dtype=F64) ** 3  # skewed, not symmetric
    return P.fill_diagonal_(0.0)


@pytest.mark.parametrize("n1,n2", [(4, 5), (2, 7), (3, 3)])
def test_null_moments_match_exhaustive_enumeration(n1, n2):
    n = n1 + n2
    P = _random_weights(n, seed=n1 * 10 + n2)
    labels = [
        torch.zeros(n, dtype=F64).index_fill_(0, torch.tensor(c), 1.0)
        for c in itertools.combinations(range(n), n1)
    ]
    T = _cross_weight_permuted(P, torch.stack(labels))
    mean, var = _permutation_null_moments(P, n1, n2)
    assert mean.item() == pytest.approx(T.mean().item(), rel=1e-12)
    assert var.item() == pytest.approx(T.var(unbiased=False).item(), rel=1e-10)


@pytest.mark.parametrize("source", ["random", "smooth_knn"])
def test_null_moments_match_monte_carlo(source):
    # 20000 random relabellings; mean within 4 Monte-Carlo standard errors, variance within 5%
    # (its Monte-Carlo relative standard error is about sqrt(2 / 20000) = 1%)
    n1, n2 = 12, 18
    if source == "random":
        P = _random_weights(n1 + n2, seed=14)
    else:
        P = smooth_knn_marginals(_randn(_gen(15), n1 + n2, 2), k=3)
    member = _random_membership(20000, n1 + n2, n1, _gen(16), P)
    T = _cross_weight_permuted(P, member)
    mean, var = _permutation_null_moments(P, n1, n2)
    assert abs(T.mean().item() - mean.item()) < 4 * math.sqrt(var.item() / len(T))
    assert T.var().item() == pytest.approx(var.item(), rel=0.05)
    # the observed-labelling helper agrees with the batched one
    member0 = torch.cat([torch.ones(n1, dtype=F64), torch.zeros(n2, dtype=F64)])[None]
    torch.testing.assert_close(_cross_weight_permuted(P, member0)[0], _cross_weight(P, n1))


# ------------------------------------------------------------------------------------------
# smooth k-NN statistic


@pytest.mark.parametrize("k", [1, 3])
def test_statistic_separates_equal_from_different(k):
    gen = _gen(17)
    R = 25
    null = torch.stack(
        [smooth_knn_statistic(_randn(gen, 40, 2), _randn(gen, 40, 2), k=k) for _ in range(R)]
    )
    # exactly mean 0 and about variance 1 under exchangeability
    assert abs(null.mean().item()) < 4 / math.sqrt(R)
    assert 0.5 < null.std().item() < 1.6
    shift = torch.tensor([2.0, 0.0], dtype=F64)
    alt = torch.stack(
        [
            smooth_knn_statistic(_randn(gen, 40, 2), _randn(gen, 40, 2) + shift, k=k)
            for _ in range(5)
        ]
    )
    assert (alt > 4).all()


def test_statistic_pvalue():
    gen = _gen(18)
    B = 99
    pvals = []
    for _ in range(40):
        stat, p = smooth_knn_statistic(
            _randn(gen, 20, 2),
            _randn(gen, 20, 2),
            k=2,
            return_pvalue=True,
            num_permutations=B,
            generator=gen,
        )
        assert stat.shape == () and p.shape == ()
        assert 1 / (B + 1) <= p.item() <= 1
        pvals.append(p.item())
    pvals = torch.tensor(pvals)
    assert 0.3 < pvals.mean().item() < 0.7
    assert (pvals <= 0.05).float().mean().item() <= 0.2
    x, y = _randn(gen, 20, 2), _randn(gen, 20, 2) + 3.0
    stat, p = smooth_knn_statistic(x, y, return_pvalue=True, num_permutations=B, generator=gen)
    assert stat.item() > 3 and p.item() == pytest.approx(1 / (B + 1))
    assert torch.equal(stat, smooth_knn_statistic(x, y))


def test_statistic_definition():
    gen = _gen(19)
    x, y = _randn(gen, 5, 2), _randn(gen, 7, 2)
    P = smooth_knn_marginals(torch.cat([x, y]), k=2, alphas=[1.0, 2.0])
    T = P[:5, 5:].sum() + P[5:, :5].sum()
    mean, var = _permutation_null_moments(P, 5, 7)
    want = -(T - mean) / torch.sqrt(var + 1e-5)
    got = smooth_knn_statistic(x, y, k=2, alphas=[1.0, 2.0])
    torch.testing.assert_close(got, want)
    # 1-d inputs are columns
    torch.testing.assert_close(
        smooth_knn_statistic(x[:, 0], y[:, 0], k=2), smooth_knn_statistic(x[:, :1], y[:, :1], k=2)
    )


@pytest.mark.parametrize("k", [1, 2])
def test_statistic_gradient(k):
    gen = _gen(20)
    x = _randn(gen, 15, 2).requires_grad_()
    y = (_randn(gen, 15, 2) + 0.5).requires_grad_()
    smooth_knn_statistic(x, y, k=k).backward()
    for t in (x, y):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # analytic gradients (through the autograd marginals for k > 1) agree with finite differences
    # for fixed inverse temperatures (the default ones are detached)
    x = _randn(gen, 4, 2).requires_grad_()
    y = _randn(gen, 3, 2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: smooth_knn_statistic(a, b, k=k, alphas=[0.7, 2.0]), (x, y)
    )


def test_statistic_under_no_grad_and_inference_mode():
    gen = _gen(21)
    x, y = _randn(gen, 8, 2), _randn(gen, 9, 2)
    with torch.no_grad():
        a = smooth_knn_statistic(x, y, k=3)
    with torch.inference_mode():
        b = smooth_knn_statistic(x, y, k=3)
    assert not a.requires_grad and not b.requires_grad
    torch.testing.assert_close(a, smooth_knn_statistic(x, y, k=3))
    torch.testing.assert_close(b, a)


@pytest.mark.parametrize("k", [1, 2])
def test_float32_and_float64(k):
    gen = _gen(22)
    x, y = _randn(gen, 30, 3), _randn(gen, 25, 3) + 0.3
    for fn in (
        lambda a, b: mmd(a, b),
        lambda a, b: mmd(a, b, kernel="cubic"),
        lambda a, b: smooth_knn_statistic(a, b, k=k),
    ):
        r64 = fn(x, y)
        r32 = fn(x.float(), y.float())
        assert r64.dtype == F64 and r32.dtype == torch.float32
        assert torch.isfinite(r32)
        assert r32.item() == pytest.approx(r64.item(), rel=1e-3, abs=1e-4)
        assert fn(x.float(), y).dtype == F64  # mixed precision promotes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = _gen(23)
    x, y = _randn(gen, 30, 3), _randn(gen, 25, 3) + 0.3
    xc, yc = x.cuda(), y.cuda()
    for kernel in ("rbf", "cubic"):
        stat, p = mmd(xc, yc, kernel=kernel, num_permutations=50, generator=_gen(0))
        assert stat.is_cuda and p.is_cuda
        torch.testing.assert_close(stat.cpu(), mmd(x, y, kernel=kernel))
    for k in (1, 3):
        stat, p = smooth_knn_statistic(xc, yc, k=k, return_pvalue=True, num_permutations=50)
        assert stat.is_cuda and p.is_cuda
        torch.testing.assert_close(stat.cpu(), smooth_knn_statistic(x, y, k=k))
    xg = xc.clone().requires_grad_()
    smooth_knn_statistic(xg, yc, k=2).backward()
    assert xg.grad.is_cuda and torch.isfinite(xg.grad).all()


# ------------------------------------------------------------------------------------------
# validation

_X = torch.randn(6, 2, dtype=F64)
_Y = torch.randn(5, 2, dtype=F64)
_NAN = _Y.clone().index_fill_(0, torch.tensor([1]), math.nan)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mmd(_X[None], _Y), "x must have shape"),
        (lambda: mmd(_X, _Y[:, :1]), "same number of features"),
        (lambda: mmd(_X, _NAN), "y contains non-finite"),
        (lambda: mmd(_X, _Y + math.inf), "y contains non-finite"),
        (lambda: mmd(_X[:1], _Y), "x needs at least 2"),
        (lambda: mmd(_X, _Y[:1]), "y needs at least 2"),
        (lambda: mmd(_X.long(), _Y), "x must have a real floating-point"),
        (lambda: mmd(_X[:, :0], _Y[:, :0]), "x must have at least one feature"),
        (lambda: mmd(_X, _Y, kernel="laplace"), "kernel must be"),
        (lambda: mmd(_X, _Y, kernel="cubic", bandwidth=1.0), "bandwidth"),
        (lambda: mmd(_X, _Y, bandwidth=-1.0), "bandwidth"),
        (lambda: mmd(_X, _Y, bandwidth="1"), "bandwidth"),
        (lambda: mmd(_X, _Y, kernel=lambda a, b: a.sum()), "kernel"),
        (lambda: mmd(_X, _Y, num_permutations=-1), "num_permutations"),
        (lambda: mmd(_X, _Y, num_permutations=1, generator=0), "generator"),
        (lambda: smooth_knn_statistic(_X, _Y, k=0), "k must be"),
        (lambda: smooth_knn_statistic(_X, _Y, k=10), "k must be"),
        (lambda: smooth_knn_statistic(_X, _Y, k=1.5), "k must be"),
        (lambda: smooth_knn_statistic(_X, _Y, k=True), "k must be"),
        (lambda: smooth_knn_statistic(_X[:1], _Y), "x needs at least 2"),
        (lambda: smooth_knn_statistic(_X, _NAN), "y contains"),
        (lambda: smooth_knn_statistic(_X.reshape(-1), _Y), "same number of features"),
        (lambda: smooth_knn_statistic(_X, _Y, alphas=-1.0), "alphas"),
        (lambda: smooth_knn_statistic(_X, _Y, alphas=[]), "alphas"),
        (lambda: smooth_knn_statistic(_X, _Y, alphas="big"), "alphas"),
        (
            lambda: smooth_knn_statistic(_X, _Y, return_pvalue=True, num_permutations=0),
            "num_permutations",
        ),
        (lambda: smooth_knn_marginals(_X, k=6), "k must be"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mmd([[0.0], [1.0]], _Y[:, :1])
