r"""The synthetic data sets of LiBI (Yacoby, Pan & Doshi-Velez [1]), deterministic given a seed.

All four draw latent codes :math:`z \sim \mathcal N(0, I_2)` and observations
:math:`x \mid z = f(z) + \epsilon` with Gaussian noise; the constants are those of Appendix E
("Synthetic Data") of *Characterizing and Avoiding Problematic Global Optima of Variational
Autoencoders*:

* :func:`linear_jte` -- LinearJTE\ :sub:`x` (eq. 3 / Appendix C.2, eqs. 17--19; Appendix E.1):
  :math:`x \mid z = L z + \epsilon`, :math:`L = \mathrm{Cholesky}(AA^\top + B)`,
  :math:`\epsilon \sim \mathcal N(0, \sigma_\epsilon^2 I - B)`, with
  :math:`A = \begin{bmatrix} 0.75 & 0.25 \\ 1.5 & -1.0 \end{bmatrix}`, :math:`B = 0.006\, I`,
  :math:`\sigma_\epsilon^2 = 0.01`. The marginal is
  :math:`\mathcal N(0, AA^\top + \sigma_\epsilon^2 I)`.
* :func:`cubic_jte` -- CubicJTE\ :sub:`x` (Appendix E.2): the same with the element-wise cube,
  :math:`x \mid z = (L z)^3 + \epsilon`, same :math:`A, B, \sigma_\epsilon^2` and noise.
* :func:`gaussian` -- Gaussian (Appendix E.3): :math:`x \mid z = z^\top A + \epsilon` with the
  :math:`2 \times 4` matrix :math:`A` of the paper and
  :math:`\epsilon \sim \mathcal N(0, 10^{-6} I_4)`.
* :func:`mobius` -- Mobius (Appendix E.4): :math:`x \mid z = m(z) + \epsilon` with the Möbius
  transform :math:`m(z) = (az + b)/(cz + d)` of :math:`z = z_1 + i z_2`, :math:`a = 1`,
  :math:`b = 1 + 4i`, :math:`c = 1`, :math:`d = 7 + 4i`, and
  :math:`\epsilon \sim \mathcal N(0, 10^{-5} I_2)`; see :func:`mobius` for why the closed-form
  transform is used rather than a network fitted to it.

Conventions: "Cholesky" is the lower-triangular factor; :math:`\mathcal N(0, v)` has *variance*
:math:`v` (as in :math:`\sigma_\epsilon^2` throughout the paper); data are row vectors, so a batch
is ``x = z @ L.T + eps``. Each function returns a :class:`LiBIData` with the observations, the true
codes, the generative parameters and the noise-free likelihood mean as a callable. Sampling uses
``numpy.random.default_rng(seed)`` in float64 on the CPU and converts at the end, as
:func:`pyro_vsm.datasets.make_2d` does, so the values do not depend on the requested device and
the float32 data are the float64 data rounded once.

References:

[1] `Characterizing and Avoiding Problematic Global Optima of Variational Autoencoders`,
    Yaniv Yacoby, Weiwei Pan, Finale Doshi-Velez (2020)
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .._checks import positive_int

__all__ = [
    "LIBI_DATASETS",
    "LiBIData",
    "cubic_jte",
    "gaussian",
    "linear_jte",
    "mobius",
    "mobius_transform",
]

#: :math:`A` of LinearJTE/CubicJTE (eq. 3 and Appendix E.1).
JTE_A = ((0.75, 0.25), (1.5, -1.0))
#: Diagonal of :math:`B` of LinearJTE/CubicJTE (eq. 3 and Appendix E.1).
JTE_B_DIAG = (0.006, 0.006)
#: :math:`\sigma_\epsilon^2` of LinearJTE/CubicJTE (eq. 3 and Appendix E.1).
JTE_SIGMA2 = 0.01
#: :math:`A` (2 x 4) of the Gaussian data set (Appendix E.3); its columns have unit norm.
GAUSSIAN_A = ((-0.7074, 0.0995, 0.0286, 0.1240), (0.7074, 0.9948, -0.9995, 0.9920))
#: Noise variance of the Gaussian data set (Appendix E.3:
#: :math:`\epsilon \sim \mathcal N(0, 0.000001)`).
GAUSSIAN_NOISE_VAR = 1e-6
#: Möbius constants :math:`a, b, c, d` as ``[real, imaginary]`` (Appendix E.4).
MOBIUS_COEFFS = {"a": (1.0, 0.0), "b": (1.0, 4.0), "c": (1.0, 0.0), "d": (7.0, 4.0)}
#: :math:`\sigma_\epsilon^2` of the Möbius data set (Appendix E.4).
MOBIUS_SIGMA2 = 1e-5


@dataclass(frozen=True)
class LiBIData:
    r"""A LiBI synthetic data set with its ground truth.

    :ivar torch.Tensor x: ``(n, d_x)`` observations.
    :ivar torch.Tensor z: ``(n, 2)`` latent codes that generated ``x`` (draws from N(0, I)).
    :ivar dict params: the generative parameters (tensors in the requested dtype/device, floats for
        scalars); always ``"noise_cov"`` (the ``(d_x, d_x)`` covariance of ε) plus the data set's
        own constants.
    :ivar str description: the generative process and where the paper defines it.
    :ivar mean_fn: the noise-free likelihood mean ``f(z)``, a callable mapping a ``(..., 2)`` tensor
        to ``(..., d_x)`` (differentiable, dtype/device of its input), so that
        ``x = mean_fn(z) + ε``.
    """

    x: torch.Tensor
    z: torch.Tensor
    params: dict
    description: str
    mean_fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)


# --------------------------------------------------------------------------------------------
# helpers


def _check_n(n):
    return positive_int(n, "n")


def _matrix(value, name, shape):
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a finite array of shape {shape}, got {value!r}")
    return arr


def _tensor(arr, dtype, device):
    return torch.as_tensor(np.asarray(arr), dtype=dtype, device=device)


def _sample_noise(rng, n, cov):
    r"""``n`` draws of N(0, cov) for a diagonal ``cov`` (float64, shape (n, d))."""
    return rng.normal(size=(n, cov.shape[0])) * np.sqrt(np.diag(cov))


def _jte_params(A, B, sigma2):
    A = _matrix(JTE_A if A is None else A, "A", (2, 2))
    B = _matrix(np.diag(JTE_B_DIAG) if B is None else B, "B", (2, 2))
    sigma2 = float(JTE_SIGMA2 if sigma2 is None else sigma2)
    if not (math.isfinite(sigma2) and sigma2 > 0):
        raise ValueError(f"sigma2 must be a positive number, got {sigma2!r}")
    if np.any(B != np.diag(np.diag(B))) or np.any(np.diag(B) < 0) or np.any(np.diag(B) > sigma2):
        raise ValueError(
            f"B must be diagonal with entries in [0, sigma2] = [0, {sigma2}], got {B!r}"
        )
    cov_l = A @ A.T + B
    try:
        L = np.linalg.cholesky(cov_l)
    except np.linalg.LinAlgError:
        raise ValueError(f"A A^T + B must be positive definite, got A={A!r}, B={B!r}") from None
    noise_cov = sigma2 * np.eye(2) - B
    return A, B, sigma2, L, noise_cov


def _jte(n, seed, A, B, sigma2, cubic, dtype, device):
    n = _check_n(n)
    A, B, sigma2, L, noise_cov = _jte_params(A, B, sigma2)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    h = z @ L.T
    mean = h**3 if cubic else h
    x = mean + _sample_noise(rng, n, noise_cov)
    L_t = _tensor(L, dtype, device)

    def mean_fn(z):
        h = z @ L_t.to(z).T
        return h**3 if cubic else h

    params = {
        "A": _tensor(A, dtype, device),
        "B": _tensor(B, dtype, device),
        "sigma2": sigma2,
        "L": L_t,
        "noise_cov": _tensor(noise_cov, dtype, device),
    }
    return _tensor(x, dtype, device), _tensor(z, dtype, device), params, mean_fn


# --------------------------------------------------------------------------------------------
# data sets


def linear_jte(n, seed=0, *, A=None, B=None, sigma2=None, dtype=torch.float32, device=None):
    r"""LinearJTE\ :sub:`x`: ``n`` draws of the linear-Gaussian model of eq. 3.

    Eq. 3 (fully described in Appendix C.2, eqs. 17--19) with the ground truth of Appendix E.1:
    :math:`z \sim \mathcal N(0, I_2)`, :math:`L = \mathrm{Cholesky}(AA^\top + B)` (lower),
    :math:`\epsilon \sim \mathcal N(0, \sigma_\epsilon^2 I - B)`,
    :math:`A = [[0.75, 0.25], [1.5, -1.0]]`, :math:`B = \mathrm{diag}(0.006, 0.006)`,
    :math:`\sigma_\epsilon^2 = 0.01`. Marginally
    :math:`x \sim \mathcal N(0, AA^\top + \sigma_\epsilon^2 I)` for every admissible ``B``; the
    true posterior :math:`p(z \mid x)` is a non-diagonal Gaussian (eqs. 23--24).

    :param int n: number of points.
    :param int seed: the same seed gives the same data.
    :param A: optional ``(2, 2)`` override of :math:`A`.
    :param B: optional ``(2, 2)`` diagonal override of :math:`B` with entries in
        :math:`[0, \sigma_\epsilon^2]` (the family of Section 1, Case 1, where :math:`\theta = B`).
    :param float sigma2: optional override of :math:`\sigma_\epsilon^2`.
    :param torch.dtype dtype: dtype of the tensors.
    :param torch.device device: device of the tensors.
    :returns: :class:`LiBIData` with ``x`` and ``z`` of shape ``(n, 2)`` and ``params`` with ``A``,
        ``B``, ``sigma2``, ``L`` (the lower Cholesky factor) and ``noise_cov``
        (:math:`\sigma_\epsilon^2 I - B`).
    """
    x, z, params, mean_fn = _jte(n, seed, A, B, sigma2, False, dtype, device)
    desc = (
        "LinearJTE_x (Yacoby et al., eq. 3 / App. C.2, E.1): z ~ N(0, I_2), "
        "x|z = Cholesky(A A^T + B) z + eps, eps ~ N(0, sigma2 I - B)"
    )
    return LiBIData(x, z, params, desc, mean_fn)


def cubic_jte(n, seed=0, *, A=None, B=None, sigma2=None, dtype=torch.float32, device=None):
    r"""CubicJTE\ :sub:`x`: ``n`` draws of :math:`x \mid z = (L z)^3 + \epsilon`, cubed per element.

    Appendix E.2: the generative process of :func:`linear_jte` (same :math:`A`, :math:`B`,
    :math:`\sigma_\epsilon^2` and noise :math:`\mathcal N(0, \sigma_\epsilon^2 I - B)`) with the
    cube applied element-wise to the likelihood mean,
    :math:`x \mid z = (\mathrm{Cholesky}(AA^\top + B) z)^3 + \epsilon`.

    :param int n: number of points.
    :param int seed: the same seed gives the same data.
    :param A: optional ``(2, 2)`` override of :math:`A`.
    :param B: optional ``(2, 2)`` diagonal override of :math:`B` with entries in
        :math:`[0, \sigma_\epsilon^2]`.
    :param float sigma2: optional override of :math:`\sigma_\epsilon^2`.
    :param torch.dtype dtype: dtype of the tensors.
    :param torch.device device: device of the tensors.
    :returns: :class:`LiBIData` as for :func:`linear_jte`.
    """
    x, z, params, mean_fn = _jte(n, seed, A, B, sigma2, True, dtype, device)
    desc = (
        "CubicJTE_x (Yacoby et al., App. E.2): z ~ N(0, I_2), "
        "x|z = (Cholesky(A A^T + B) z)^3 (element-wise) + eps, eps ~ N(0, sigma2 I - B)"
    )
    return LiBIData(x, z, params, desc, mean_fn)


def gaussian(n, seed=0, *, dtype=torch.float32, device=None):
    r"""Gaussian: ``n`` draws of the 4-d :math:`x \mid z = z^\top A + \epsilon` from 2-d codes.

    Appendix E.3: :math:`z \sim \mathcal N(0, I_2)`,
    :math:`A = \begin{bmatrix} -0.7074 & 0.0995 & 0.0286 & 0.1240 \\
    0.7074 & 0.9948 & -0.9995 & 0.9920 \end{bmatrix}` and
    :math:`\epsilon \sim \mathcal N(0, 10^{-6} I_4)` (the paper writes
    :math:`\mathcal N(0, 0.000001)`; read as a per-coordinate variance, the paper's convention).
    Marginally :math:`x \sim \mathcal N(0, A^\top A + 10^{-6} I_4)`, a rank-2 Gaussian plus noise.

    :param int n: number of points.
    :param int seed: the same seed gives the same data.
    :param torch.dtype dtype: dtype of the tensors.
    :param torch.device device: device of the tensors.
    :returns: :class:`LiBIData` with ``x`` ``(n, 4)``, ``z`` ``(n, 2)`` and ``params`` with ``A``
        (``(2, 4)``), ``noise_var`` and ``noise_cov``.
    """
    n = _check_n(n)
    A = np.asarray(GAUSSIAN_A, dtype=np.float64)
    noise_cov = GAUSSIAN_NOISE_VAR * np.eye(4)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    x = z @ A + _sample_noise(rng, n, noise_cov)
    A_t = _tensor(A, dtype, device)

    def mean_fn(z):
        return z @ A_t.to(z)

    params = {
        "A": A_t,
        "noise_var": GAUSSIAN_NOISE_VAR,
        "noise_cov": _tensor(noise_cov, dtype, device),
    }
    desc = (
        "Gaussian (Yacoby et al., App. E.3): z ~ N(0, I_2), x|z = z^T A + eps, eps ~ N(0, 1e-6 I_4)"
    )
    return LiBIData(_tensor(x, dtype, device), _tensor(z, dtype, device), params, desc, mean_fn)


def mobius_transform(
    z, a=MOBIUS_COEFFS["a"], b=MOBIUS_COEFFS["b"], c=MOBIUS_COEFFS["c"], d=MOBIUS_COEFFS["d"]
):
    r"""The Möbius transform :math:`m(z) = (az + b)/(cz + d)` of ``z[..., 0] + i z[..., 1]``.

    Real arithmetic on ``(..., 2)`` tensors (``[real, imaginary]``), so it is differentiable and
    keeps the dtype and device of ``z``; the constants are ``[real, imaginary]`` pairs and default
    to those of Appendix E.4 (:math:`a = 1`, :math:`b = 1 + 4i`, :math:`c = 1`, :math:`d = 7 + 4i`).
    The transform has a pole at :math:`z = -d/c`.

    :param torch.Tensor z: points ``[real, imaginary]``, shape ``(..., 2)``.
    :param a: :math:`a` as ``[real, imaginary]``.
    :param b: :math:`b` as ``[real, imaginary]``.
    :param c: :math:`c` as ``[real, imaginary]``.
    :param d: :math:`d` as ``[real, imaginary]``.
    :returns: :math:`m(z)` as ``[real, imaginary]``, shape ``(..., 2)``.
    """
    if not isinstance(z, torch.Tensor) or z.shape[-1:] != (2,):
        raise ValueError(f"z must be a tensor of shape (..., 2), got {getattr(z, 'shape', z)!r}")
    zr, zi = z[..., 0], z[..., 1]
    (ar, ai), (br, bi), (cr, ci), (dr, di) = (tuple(map(float, v)) for v in (a, b, c, d))
    num_r = ar * zr - ai * zi + br
    num_i = ar * zi + ai * zr + bi
    den_r = cr * zr - ci * zi + dr
    den_i = cr * zi + ci * zr + di
    den = den_r * den_r + den_i * den_i
    return torch.stack(
        [(num_r * den_r + num_i * den_i) / den, (num_i * den_r - num_r * den_i) / den], -1
    )


def mobius(n, seed=0, *, dtype=torch.float32, device=None):
    r"""Mobius: ``n`` draws of :math:`x \mid z = m(z) + \epsilon`, :math:`m` a Möbius transform.

    Appendix E.4: :math:`z \sim \mathcal N(0, I_2)` is read as the complex number
    :math:`z_1 + i z_2`, :math:`m(z) = (az + b)/(cz + d)` with :math:`a = [1, 0]`,
    :math:`b = [1, 4]`, :math:`c = [1, 0]`, :math:`d = [7, 4]` (``[real, imaginary]``), the output
    is ``[Re m(z), Im m(z)]`` and :math:`\epsilon \sim \mathcal N(0, \sigma_\epsilon^2 I_2)` with
    :math:`\sigma_\epsilon^2 = 10^{-5}`.

    **Construction.** The paper trains "a neural network :math:`f` to map :math:`z \sim p(z)` to
    :math:`m(z)`" and then says it uses "this neural network approximation and the ground-truth
    function" to generate :math:`x = f(z) + \epsilon`. It gives neither the architecture, nor the
    training set, loss, optimiser or stopping rule, nor the fitted weights, so that network cannot
    be reproduced: any network fitted here would be our invention, and its exact values would
    depend on the torch build and device. We therefore use the closed-form transform itself as the
    likelihood mean (:func:`mobius_transform`, exposed as ``mean_fn``). It is the function the
    paper's network approximates; it is smooth on the support of the data (the pole
    :math:`z = -7 - 4i` lies :math:`\sqrt{65} \approx 8.06` standard deviations from the origin,
    and a code falls within distance 1 of it with probability :math:`2.7 \cdot 10^{-13}`); the data
    are bit-for-bit reproducible from the seed; and the exact ground-truth likelihood stays
    available for evaluation. A model that must lie in a network class (the paper gives the
    decoder the ground-truth architecture) can fit its network to ``mean_fn`` on draws from
    :math:`p(z)`.

    :param int n: number of points.
    :param int seed: the same seed gives the same data.
    :param torch.dtype dtype: dtype of the tensors.
    :param torch.device device: device of the tensors.
    :returns: :class:`LiBIData` with ``x`` and ``z`` of shape ``(n, 2)`` and ``params`` with
        ``a``, ``b``, ``c``, ``d`` (``[real, imaginary]`` tensors), ``sigma2`` and ``noise_cov``.
    """
    n = _check_n(n)
    noise_cov = MOBIUS_SIGMA2 * np.eye(2)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    a, b, c, d = (complex(*MOBIUS_COEFFS[k]) for k in "abcd")
    w = z[:, 0] + 1j * z[:, 1]
    m = (a * w + b) / (c * w + d)
    x = np.stack([m.real, m.imag], -1) + _sample_noise(rng, n, noise_cov)

    def mean_fn(z):
        return mobius_transform(z)

    params = {k: _tensor(v, dtype, device) for k, v in MOBIUS_COEFFS.items()}
    params["sigma2"] = MOBIUS_SIGMA2
    params["noise_cov"] = _tensor(noise_cov, dtype, device)
    desc = (
        "Mobius (Yacoby et al., App. E.4): z ~ N(0, I_2) as z1 + i z2, "
        "x|z = m(z) + eps with m(z) = (a z + b)/(c z + d), a = 1, b = 1+4i, c = 1, d = 7+4i "
        "(closed form, not a fitted network), eps ~ N(0, 1e-5 I_2)"
    )
    return LiBIData(_tensor(x, dtype, device), _tensor(z, dtype, device), params, desc, mean_fn)


#: The LiBI data sets by name: each maps ``(n, seed=0, *, dtype, device)`` to a :class:`LiBIData`.
LIBI_DATASETS = {
    "linear_jte": linear_jte,
    "cubic_jte": cubic_jte,
    "gaussian": gaussian,
    "mobius": mobius,
}
