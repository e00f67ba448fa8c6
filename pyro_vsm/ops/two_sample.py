r"""Two-sample statistics for comparing data with model samples: the MMD, and the pairwise
distances, kernels and permutation helpers shared with :mod:`pyro_vsm.ops.smooth_knn`.

* :func:`mmd` -- the unbiased squared maximum mean discrepancy :math:`\mathrm{MMD}^2_u` of
  Gretton et al. [1] with a Gaussian (RBF) kernel, the cubic polynomial kernel of the kernel
  inception distance (Bińkowski et al. [2]) or any user kernel, optionally with a permutation
  test.

Everything is plain torch: new tensors take their device and dtype from the inputs and the
statistics never leave the device, so they run on CUDA and are differentiable with respect to the
samples (only the data-dependent median-heuristic bandwidth is detached). Samples are tensors
of shape ``(n, d)``, or ``(n,)`` for ``d = 1``.

References:

[1] `A Kernel Two-Sample Test`,
    Arthur Gretton, Karsten M. Borgwardt, Malte J. Rasch, Bernhard Schölkopf, Alexander Smola (2012)

[2] `Demystifying MMD GANs`,
    Mikołaj Bińkowski, Danica J. Sutherland, Michael Arbel, Arthur Gretton (2018)
"""

import numbers
from collections.abc import Callable

import torch

from .._checks import as_samples as _as_samples
from .._checks import check_int as _check_int

__all__ = ["mmd"]

# Permutation statistics are computed in chunks of at most this many (permutation, point) cells.
_CHUNK_CELLS = 2**22


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_pair(x, y, min_size, check_finite=True):
    x = _as_samples(x, "x", check_finite=check_finite)
    y = _as_samples(y, "y", check_finite=check_finite)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of features, got x: {tuple(x.shape)}, "
            f"y: {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    for name, t in (("x", x), ("y", y)):
        if t.shape[0] < min_size:
            raise ValueError(f"{name} needs at least {min_size} points, got {t.shape[0]}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def _check_generator(generator):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")


# --------------------------------------------------------------------------------------------
# distances and kernels


def _sq_dists(a, b):
    r"""Squared Euclidean distances ``(na, nb)`` via the Gram expansion, clamped at 0."""
    aa = (a * a).sum(-1)
    bb = (b * b).sum(-1)
    return (aa[:, None] + bb[None, :] - 2.0 * (a @ b.transpose(-1, -2))).clamp_min(0.0)


def _pooled_sq_dists(z):
    r"""Squared distances within one sample, exactly zero on the diagonal.

    The sample is centred first (distances are translation invariant) to reduce cancellation in
    the Gram expansion.
    """
    z = z - z.mean(0, keepdim=True)
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return _sq_dists(z, z).masked_fill(eye, 0.0)


def _safe_sqrt(sq):
    r"""``sqrt`` with a zero (not infinite) gradient where the argument is 0."""
    pos = sq > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), 0.0)


def _median_offdiag(dist):
    r"""Lower median of the distinct off-diagonal entries of a symmetric matrix (detached).

    Falls back to 1 when the median is 0 (more than half the points coincide) so that the scale
    is always positive.
    """
    n = dist.shape[0]
    iu = torch.triu_indices(n, n, 1, device=dist.device)
    med = dist.detach()[iu[0], iu[1]].median()
    return torch.where(med > 0, med, torch.ones_like(med))


def _rbf_gram(z, bandwidth):
    sq = _pooled_sq_dists(z)
    if bandwidth is None:
        h = _median_offdiag(_safe_sqrt(sq.detach()))
    else:
        h = bandwidth
    return torch.exp(-sq / (2.0 * h * h))


def _cubic_gram(z):
    d = z.shape[1]
    return (z @ z.transpose(-1, -2) / d + 1.0) ** 3


def _check_bandwidth(bandwidth, like):
    if bandwidth is None:
        return None
    if isinstance(bandwidth, torch.Tensor):
        if bandwidth.numel() != 1:
            raise ValueError(f"bandwidth must be a scalar, got shape {tuple(bandwidth.shape)}")
        bw = bandwidth.reshape(()).to(dtype=like.dtype, device=like.device)
    elif isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool):
        bw = float(bandwidth)
    else:
        raise ValueError(f"bandwidth must be None or a positive number, got {bandwidth!r}")
    if not bool(torch.as_tensor(bw).isfinite()) or not bool(torch.as_tensor(bw) > 0):
        raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}")
    return bw


def _pooled_gram(z, kernel, bandwidth):
    if callable(kernel):
        if bandwidth is not None:
            raise ValueError("bandwidth must be None for a callable kernel")
        gram = kernel(z, z)
        n = z.shape[0]
        if not isinstance(gram, torch.Tensor) or gram.shape != (n, n):
            shape = tuple(gram.shape) if isinstance(gram, torch.Tensor) else type(gram).__name__
            raise ValueError(f"kernel(a, b) must return a ({n}, {n}) Gram matrix, got {shape}")
        return gram
    if kernel == "rbf":
        return _rbf_gram(z, _check_bandwidth(bandwidth, z))
    if kernel == "cubic":
        if bandwidth is not None:
            raise ValueError("bandwidth must be None for kernel='cubic'")
        return _cubic_gram(z)
    raise ValueError(f"kernel must be 'rbf', 'cubic' or a callable, got {kernel!r}")


# --------------------------------------------------------------------------------------------
# permutations


def _random_membership(num, n_total, n_first, generator, like):
    r"""``(num, n_total)`` 0/1 matrices with ``n_first`` ones per row at uniformly random places.

    Uniform random permutations are obtained by sorting float64 uniforms (drawn on the
    generator's device and moved to ``like``'s), the first ``n_first`` permuted indices forming
    the relabelled first sample.
    """
    gdev = generator.device if generator is not None else like.device
    keys = torch.rand(num, n_total, generator=generator, device=gdev, dtype=torch.float64)
    perm = keys.argsort(dim=1)[:, :n_first].to(like.device)
    member = torch.zeros(num, n_total, dtype=like.dtype, device=like.device)
    return member.scatter_(1, perm, 1.0)


def _chunks(num, n_total):
    size = max(1, _CHUNK_CELLS // max(n_total, 1))
    for start in range(0, num, size):
        yield min(size, num - start)


# --------------------------------------------------------------------------------------------
# MMD


def _mmd2_from_gram(gram, n):
    kxx = gram[:n, :n]
    kyy = gram[n:, n:]
    m = gram.shape[0] - n
    sxx = kxx.sum() - kxx.diagonal().sum()
    syy = kyy.sum() - kyy.diagonal().sum()
    sxy = gram[:n, n:].sum() + gram[n:, :n].sum()
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - sxy / (n * m)


def _mmd2_permuted(gram, member, n):
    r"""MMD²_u for a batch of relabellings (``member[b, i] = 1`` iff point i is in the first
    sample of size ``n``)."""
    m = gram.shape[0] - n
    diag = gram.diagonal()
    rows = gram.sum(1)
    cols = gram.sum(0)
    total = gram.sum()
    ka = member @ gram.transpose(0, 1)  # (B, N): sum_j K_ij a_j
    aka = (ka * member).sum(1)
    a_rows = member @ rows
    a_cols = member @ cols
    sxx = aka - member @ diag
    bkb = total - a_rows - a_cols + aka
    syy = bkb - (diag.sum() - member @ diag)
    sxy = a_rows + a_cols - 2.0 * aka
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - sxy / (n * m)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "rbf",
    bandwidth: float | torch.Tensor | None = None,
    num_permutations: int = 0,
    generator: torch.Generator | None = None,
    *,
    check_finite: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Unbiased squared maximum mean discrepancy between two samples.

    For :math:`x_1,\dots,x_n \sim P` and :math:`y_1,\dots,y_m \sim Q` this is the unbiased
    estimate of :math:`\mathrm{MMD}^2_k(P, Q)` (Gretton et al., 2012, Lemma 6)

    .. math::

        \mathrm{MMD}^2_u = \frac{1}{n(n-1)}\sum_{i\ne j} k(x_i, x_j)
            + \frac{1}{m(m-1)}\sum_{i\ne j} k(y_i, y_j)
            - \frac{2}{nm}\sum_{i,j} k(x_i, y_j),

    whose expectation is exactly :math:`\mathrm{MMD}^2` (so it can be negative; it is 0 in
    expectation when :math:`P = Q`). For a non-symmetric callable kernel the cross term uses
    :math:`\frac{1}{nm}\sum_{i,j} [k(x_i, y_j) + k(y_j, x_i)]`.

    Kernels:

    * ``"rbf"``: :math:`k(a, b) = \exp(-\lVert a - b\rVert^2 / (2h^2))`. With
      ``bandwidth=None`` the median heuristic sets :math:`h` to the (lower) median of the
      :math:`N(N-1)/2` pairwise Euclidean distances of the pooled sample (:math:`N = n + m`),
      treated as a constant (detached); if that median is 0 it falls back to 1. A positive number
      (or scalar tensor) fixes :math:`h`. Because the median heuristic is a symmetric function of
      the pooled sample, the estimate stays exactly unbiased (zero mean) under :math:`P = Q`.
    * ``"cubic"``: :math:`k(a, b) = (a^\top b / d + 1)^3`, the polynomial kernel of the kernel
      inception distance (Bińkowski et al., 2018), the "cubic kernel" used for latent-space MMD
      in variational score matching. ``bandwidth`` must be ``None``.
    * a callable ``kernel(a, b)`` returning the ``(len(a), len(b))`` Gram matrix; ``bandwidth``
      must be ``None``.

    With ``num_permutations > 0`` a permutation test of :math:`P = Q` is run as well: the pooled
    Gram matrix is computed once and the statistic is recomputed for ``num_permutations``
    uniformly random relabellings of the pooled points (vectorised through 0/1 membership
    vectors :math:`a`, using :math:`\sum_{i,j\in X} K_{ij} = a^\top K a` etc.), giving

    .. math::

        p = \frac{1 + \#\{b : \mathrm{MMD}^2_{u,b} \ge \mathrm{MMD}^2_u\}}{1 + B}.

    :param x: first sample, shape ``(n, d)`` or ``(n,)``; :math:`n \ge 2`.
    :param y: second sample, shape ``(m, d)`` or ``(m,)``; :math:`m \ge 2`.
    :param kernel: ``"rbf"``, ``"cubic"`` or a callable Gram-matrix function.
    :param bandwidth: RBF bandwidth :math:`h`; ``None`` for the median heuristic.
    :param num_permutations: number :math:`B` of permutations of the test; 0 for none.
    :param generator: optional :class:`torch.Generator` for the permutations (its device may
        differ from the samples').
    :param bool check_finite: check that the samples are finite (one host synchronisation);
        ``False`` inside training steps, whose losses check their values once.
    :returns: the 0-dim tensor :math:`\mathrm{MMD}^2_u` (differentiable with respect to ``x``
        and ``y``), or ``(mmd2, p_value)`` when ``num_permutations > 0`` (``p_value`` is a
        detached 0-dim tensor in :math:`[1/(B+1), 1]`).
    :raises ValueError: on malformed, non-finite or too small samples, or bad options.
    """
    x, y = _check_pair(x, y, min_size=2, check_finite=check_finite)
    num_permutations = _check_int(num_permutations, "num_permutations", 0)
    _check_generator(generator)
    n = x.shape[0]
    z = torch.cat([x, y], 0)
    gram = _pooled_gram(z, kernel, bandwidth)
    mmd2 = _mmd2_from_gram(gram, n)
    if num_permutations == 0:
        return mmd2
    gram = gram.detach()
    observed = mmd2.detach()
    exceed = torch.zeros((), dtype=torch.long, device=z.device)
    for size in _chunks(num_permutations, z.shape[0]):
        member = _random_membership(size, z.shape[0], n, generator, gram)
        stats = _mmd2_permuted(gram, member, n)
        exceed = exceed + (stats >= observed).sum()
    p_value = (1.0 + exceed.to(gram.dtype)) / (1.0 + num_permutations)
    return mmd2, p_value
