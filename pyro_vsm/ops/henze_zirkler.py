r"""The Henze--Zirkler test statistic for multivariate normality, differentiable in torch.

For codes :math:`x_1, \dots, x_n \in \mathbb{R}^p` with mean :math:`\bar x` and covariance
:math:`S = \frac1n \sum_i (x_i - \bar x)(x_i - \bar x)^\top` (divisor :math:`n`), let

.. math::

    D_{ij} = (x_i - x_j)^\top S^{-1} (x_i - x_j), \qquad
    D_i = (x_i - \bar x)^\top S^{-1} (x_i - \bar x).

The statistic of Henze & Zirkler [1], scaled by :math:`n`, is

.. math::

    \mathrm{HZ} = \frac1n \sum_{i,j} e^{-\beta^2 D_{ij}/2}
        - 2 (1 + \beta^2)^{-p/2} \sum_i e^{-\beta^2 D_i / (2(1 + \beta^2))}
        + n (1 + 2\beta^2)^{-p/2}

with the smoothing parameter
:math:`\beta = \frac{1}{\sqrt2} \left(\frac{2p + 1}{4}\right)^{1/(p+4)} n^{1/(p+4)}`. It is
:math:`n` times a weighted :math:`L^2` distance between the empirical characteristic function of
the standardised codes and that of :math:`\mathcal N(0, I_p)`, so it is non-negative, invariant
under non-singular affine maps of the codes, of order 1 for normal codes and grows like :math:`n`
under fixed non-normal alternatives. LiBI ([2], eqs. 7, 43 and 44) uses it as a
smooth penalty pushing amortised codes :math:`z_n = h(x_n)` towards normality.

The p-value uses the lognormal approximation of the null distribution of Henze & Zirkler [1],
with the exact first two null moments of the statistic:
with :math:`a = 1 + 2\beta^2` and :math:`w = (1 + \beta^2)(1 + 3\beta^2)`,

.. math::

    \mu &= 1 - a^{-p/2}\left(1 + \frac{p\beta^2}{a} + \frac{p(p+2)\beta^4}{2a^2}\right), \\
    \sigma^2 &= 2(1 + 4\beta^2)^{-p/2}
        + 2a^{-p}\left(1 + \frac{2p\beta^4}{a^2} + \frac{3p(p+2)\beta^8}{4a^4}\right)
        - 4w^{-p/2}\left(1 + \frac{3p\beta^4}{2w} + \frac{p(p+2)\beta^8}{2w^2}\right),

and :math:`\log \mathrm{HZ}` is treated as normal with mean
:math:`\log(\mu^2/\sqrt{\sigma^2 + \mu^2})` and variance :math:`\log((\sigma^2 + \mu^2)/\mu^2)`;
the p-value is the upper tail probability.

Numerics: each coordinate is centred and divided by its standard deviation (HZ is invariant to
this), the Cholesky factor :math:`L` of the resulting correlation matrix :math:`R` is computed and
the codes are whitened by a triangular solve, :math:`y_i = L^{-1} s_i`, so that
:math:`D_i = \|y_i\|^2` and :math:`D_{ij} = \|y_i - y_j\|^2`; no inverse is formed. The cost is
:math:`O(n^2 p)` time and :math:`O(n^2)` memory. Everything stays on the device and dtype of the
input and the statistic is differentiable with respect to the codes.

References:

[1] `A class of invariant consistent tests for multivariate normality`,
    Norbert Henze, Bernd Zirkler (1990)

[2] `Characterizing and Avoiding Problematic Global Optima of Variational Autoencoders`,
    Yaniv Yacoby, Weiwei Pan, Finale Doshi-Velez (2020)
"""

import math

import torch

__all__ = ["henze_zirkler", "henze_zirkler_beta", "henze_zirkler_null_moments"]

#: With ``jitter == 0``, a correlation matrix whose smallest squared Cholesky pivot is below
#: ``SINGULAR_RTOL * p * eps`` (``eps`` of the codes' dtype) is treated as singular: the codes
#: (numerically) lie in an affine subspace and the Mahalanobis distances are meaningless. Exactly
#: collinear codes give pivots of a few ``p * eps`` (measured for n up to 5000, p up to 20).
SINGULAR_RTOL = 100.0


def henze_zirkler_beta(n, p):
    r"""The smoothing parameter :math:`\beta = 2^{-1/2} ((2p+1)/4)^{1/(p+4)} n^{1/(p+4)}`.

    :param int n: the number of points.
    :param int p: the dimension of the points.
    :returns: :math:`\beta`, a Python float.
    """
    return ((2.0 * p + 1.0) / 4.0) ** (1.0 / (p + 4.0)) * n ** (1.0 / (p + 4.0)) / math.sqrt(2.0)


def henze_zirkler_null_moments(n, p):
    r"""Mean and variance :math:`(\mu, \sigma^2)` of the statistic under normality (floats).

    These are the moments used by the lognormal approximation of the p-value (see the module
    docstring); they depend on ``n`` only through :math:`\beta`.

    :param int n: the number of points.
    :param int p: the dimension of the points.
    :returns: ``(mean, variance)``, Python floats.
    """
    b2 = henze_zirkler_beta(n, p) ** 2
    b4, b8 = b2**2, b2**4
    a = 1.0 + 2.0 * b2
    w = (1.0 + b2) * (1.0 + 3.0 * b2)
    mean = 1.0 - a ** (-p / 2.0) * (1.0 + p * b2 / a + p * (p + 2.0) * b4 / (2.0 * a**2))
    var = (
        2.0 * (1.0 + 4.0 * b2) ** (-p / 2.0)
        + 2.0 * a ** (-p) * (1.0 + 2.0 * p * b4 / a**2 + 3.0 * p * (p + 2.0) * b8 / (4.0 * a**4))
        - 4.0
        * w ** (-p / 2.0)
        * (1.0 + 3.0 * p * b4 / (2.0 * w) + p * (p + 2.0) * b8 / (2.0 * w**2))
    )
    return mean, var


def _check_codes(codes, check=True):
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
    if not codes.is_floating_point():
        raise ValueError(f"codes must have a real floating-point dtype, got {codes.dtype}")
    if codes.dim() == 1:
        codes = codes.unsqueeze(-1)
    elif codes.dim() != 2:
        raise ValueError(f"codes must have shape (n, p) or (n,), got {tuple(codes.shape)}")
    n, p = codes.shape
    if p < 1:
        raise ValueError(f"codes must have at least one coordinate, got shape {tuple(codes.shape)}")
    if n < 2:
        raise ValueError(f"codes needs at least 2 points, got {n}")
    if check and not bool(torch.isfinite(codes).all()):
        raise ValueError("codes contains non-finite values")
    return codes


def _whiten(x, jitter, check=True):
    r"""Whitened codes ``y``: ``‖y_i‖² = D_i``, the Mahalanobis distance to the mean (divisor n).

    With ``check=False`` nothing is read back to the host: degenerate codes give non-finite
    values instead of an error."""
    n, p = x.shape
    xc = x - x.mean(0, keepdim=True)
    var = (xc * xc).mean(0)  # divisor n
    if not check:
        s = xc / var.sqrt()
        if p == 1:
            return s / math.sqrt(1.0 + jitter) if jitter else s
        eye = torch.eye(p, dtype=x.dtype, device=x.device)
        corr = s.T @ s / n
        chol, info = torch.linalg.cholesky_ex(0.5 * (corr + corr.T) + jitter * eye)
        chol = torch.where(info == 0, chol, torch.full_like(chol, float("nan")))
        return torch.linalg.solve_triangular(chol, s.T, upper=False).T
    # A constant coordinate can have a variance of rounding size (the mean is inexact), so compare
    # with the coordinate's magnitude: below (SINGULAR_RTOL * eps)^2 * mean(x^2) it is constant.
    floor = (SINGULAR_RTOL * torch.finfo(x.dtype).eps) ** 2 * (x * x).mean(0).detach()
    constant = (var.detach() <= floor) | (var.detach() <= 0)
    if bool(constant.any()):
        bad = torch.nonzero(constant).flatten().tolist()
        raise ValueError(
            f"codes has (numerically) zero variance in coordinate(s) {bad}: covariance is singular"
        )
    s = xc / var.sqrt()
    if p == 1:
        # The correlation "matrix" is 1 (plus jitter): no factorisation needed.
        return s / math.sqrt(1.0 + jitter) if jitter else s
    corr = s.T @ s / n
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    corr = 0.5 * (corr + corr.T) + jitter * eye
    chol, info = torch.linalg.cholesky_ex(corr)
    if int(info) != 0:
        singular = True
    elif jitter:
        singular = False  # the caller regularised on purpose: accept any positive pivot
    else:
        tol = SINGULAR_RTOL * p * torch.finfo(x.dtype).eps
        singular = float(chol.diagonal().min().detach()) ** 2 <= tol
    if singular:
        hint = "increase jitter" if jitter else "pass jitter > 0 to regularise"
        raise ValueError(
            "the covariance of codes is (numerically) singular: the codes lie in a lower-"
            f"dimensional affine subspace (e.g. n <= p or collinear coordinates); {hint}"
        )
    return torch.linalg.solve_triangular(chol, s.T, upper=False).T


def henze_zirkler(codes, *, return_pvalue=False, jitter=0.0, check=True):
    r"""The Henze--Zirkler multivariate normality statistic of ``codes`` (differentiable).

    :param torch.Tensor codes: ``(n, p)`` real floating-point tensor of ``n >= 2`` points (a
        ``(n,)`` tensor is read as ``p = 1``). The covariance of the codes must be non-singular
        (in particular ``n > p``) unless ``jitter > 0``.
    :param bool return_pvalue: also return the p-value of the lognormal approximation to the null
        distribution (small values: evidence against normality).
    :param float jitter: added to the diagonal of the *correlation* matrix of the codes, i.e.
        ``jitter`` times each coordinate's variance is added to the diagonal of the covariance,
        which keeps the statistic scale invariant. ``0`` (default) computes the exact statistic
        and raises :class:`ValueError` on a singular covariance; a small value (e.g. ``1e-6``)
        makes degenerate codes return a (large) finite value instead, e.g. inside a penalty.
    :param bool check: check the values of ``codes`` (finite, non-degenerate). ``False`` reads
        nothing back to the host, as a training step needs: non-finite or degenerate codes then
        give a non-finite statistic instead of an error.
    :returns: a 0-d tensor ``HZ`` (dtype and device of ``codes``), or ``(HZ, p_value)``.
    :raises ValueError: if ``codes`` does not have shape ``(n, p)``/``(n,)``, has fewer than 2
        points, contains non-finite values, or has a singular covariance with ``jitter == 0``.
    """
    codes = _check_codes(codes, check)
    jitter = float(jitter)
    if not (math.isfinite(jitter) and jitter >= 0.0):
        raise ValueError(f"jitter must be a finite non-negative number, got {jitter!r}")
    n, p = codes.shape
    b2 = henze_zirkler_beta(n, p) ** 2

    y = _whiten(codes, jitter, check)
    d_i = (y * y).sum(-1)
    d_ij = (d_i[:, None] + d_i[None, :] - 2.0 * (y @ y.T)).clamp_min(0.0)
    d_ij = d_ij.masked_fill(torch.eye(n, dtype=torch.bool, device=y.device), 0.0)  # D_ii = 0
    pair = torch.exp(-0.5 * b2 * d_ij).sum() / n
    single = torch.exp(-b2 / (2.0 * (1.0 + b2)) * d_i).sum()
    hz = pair - 2.0 * (1.0 + b2) ** (-p / 2.0) * single + n * (1.0 + 2.0 * b2) ** (-p / 2.0)
    if not return_pvalue:
        return hz
    mean, var = henze_zirkler_null_moments(n, p)
    log_mu = math.log(mean**2 / math.sqrt(var + mean**2))
    log_sd = math.sqrt(math.log((var + mean**2) / mean**2))
    tiny = torch.finfo(hz.dtype).tiny
    z = (torch.log(hz.clamp_min(tiny)) - log_mu) / log_sd
    pvalue = 0.5 * torch.erfc(z / math.sqrt(2.0))
    return hz, pvalue
