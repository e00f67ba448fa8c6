r"""Geometry of the unit sphere :math:`S^n = \{x \in \mathbb R^{n+1} : \lVert x\rVert = 1\}`.

Pure tensor functions; points and tangent vectors have shape ``(..., n + 1)`` and every function
works on any batch shape, dtype and device (no host synchronisation).

* :func:`tangent_projection`: :math:`P_x v = v - (x\cdot v)\,x`, the orthogonal projection onto
  the tangent space :math:`T_xS^n = x^\perp`;
* :func:`normalize_retraction`: :math:`R_x(v) = (x + v)/\lVert x + v\rVert`, the metric
  projection of :math:`x + v` back to the sphere (a retraction: :math:`R_x(v) = x + v -
  \tfrac12\lVert v\rVert^2 x + O(\lVert v\rVert^3)` for tangent :math:`v`, the same second-order
  expansion as the exponential map);
* :func:`exp_map` and :func:`log_map`: :math:`\exp_x(v) = \cos\lVert v\rVert\,x +
  \sin\lVert v\rVert\,v/\lVert v\rVert` and its inverse on :math:`\lVert v\rVert < \pi`;
* :func:`log_sphere_area`: :math:`\log|S^n| = \log 2 + \tfrac{n+1}2\log\pi -
  \log\Gamma(\tfrac{n+1}2)`;
* :func:`stereographic_chart`, :func:`stereographic_inverse`, :func:`stereographic_tangent`,
  :func:`stereographic_log_det_metric`: the stereographic chart with a per-sample hemisphere
  flip. A point with :math:`x_{n+1} \ge 0` is projected from the south pole,
  :math:`u = x_{1:n}/(1 + x_{n+1})`; a point with :math:`x_{n+1} < 0` is first reflected to the
  upper hemisphere (:math:`x_{n+1} \mapsto -x_{n+1}`, an isometry). So every chart coordinate
  has :math:`\lVert u\rVert \le 1`, far from the projection pole, and the inverse
  :math:`x = (2u,\ s\,(1 - \lVert u\rVert^2))/(1 + \lVert u\rVert^2)` with the sign
  :math:`s = \pm 1` of the hemisphere is defined on all of :math:`\mathbb R^n` (a step may leave
  the unit ball). The metric is conformal, :math:`g_{ij}(u) = \lambda(u)^2\delta_{ij}` with
  :math:`\lambda = 2/(1 + \lVert u\rVert^2)`, so :math:`\log|G| = 2n\log\lambda`.
"""

import math
import numbers

import torch

__all__ = [
    "check_on_sphere",
    "exp_map",
    "log_map",
    "log_sphere_area",
    "normalize_retraction",
    "stereographic_chart",
    "stereographic_inverse",
    "stereographic_log_det_metric",
    "stereographic_tangent",
    "tangent_projection",
]


def _dot(a, b):
    return (a * b).sum(-1, keepdim=True)


def tangent_projection(x, v):
    r""":math:`P_x v = (I - xx^\top)v`, the component of ``v`` tangent to the sphere at ``x``.

    :param torch.Tensor x: points on :math:`S^n`, shape ``(..., n + 1)``.
    :param torch.Tensor v: vectors broadcastable to ``x``.
    :returns: :math:`v - (x\cdot v)x`, the broadcast shape.
    """
    return v - _dot(x, v) * x


def normalize_retraction(x, v):
    r"""The normalising retraction :math:`R_x(v) = (x + v)/\lVert x + v\rVert`.

    For a tangent ``v`` (:math:`x\cdot v = 0`) the norm is :math:`\sqrt{1 + \lVert v\rVert^2}
    \ge 1`, so the map is defined for every tangent vector; it maps :math:`T_xS^n` one-to-one onto
    the open hemisphere :math:`\{y : x\cdot y > 0\}` (the inverse of the gnomonic projection).

    :param torch.Tensor x: points on :math:`S^n`, shape ``(..., n + 1)``.
    :param torch.Tensor v: tangent vectors at ``x``, broadcastable to ``x``.
    """
    y = x + v
    return y / torch.linalg.vector_norm(y, dim=-1, keepdim=True)


def _sinc(r):
    r""":math:`\sin r / r` with its Taylor series near 0 (finite value and gradient at 0)."""
    small = r.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(r), r)
    r2 = r * r
    return torch.where(small, 1 - r2 / 6 + r2 * r2 / 120, torch.sin(safe) / safe)


def exp_map(x, v):
    r"""The exponential map :math:`\exp_x(v) = \cos\lVert v\rVert\,x + \frac{\sin\lVert v
    \rVert}{\lVert v\rVert}v`: the point reached after unit time along the great circle through
    ``x`` with initial velocity ``v``.

    Finite and differentiable at :math:`v = 0` (a series is used for :math:`\lVert v\rVert <
    10^{-3}`). The result is renormalised, which only removes rounding.

    :param torch.Tensor x: points on :math:`S^n`, shape ``(..., n + 1)``.
    :param torch.Tensor v: tangent vectors at ``x``, broadcastable to ``x``.
    """
    r = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    y = torch.cos(r) * x + _sinc(r) * v
    return y / torch.linalg.vector_norm(y, dim=-1, keepdim=True)


def log_map(x, y):
    r"""The inverse of :func:`exp_map`: the tangent vector :math:`v \in T_xS^n` with
    :math:`\lVert v\rVert = \arccos(x\cdot y) < \pi` and :math:`\exp_x(v) = y`.

    Computed as :math:`\theta\,w/\lVert w\rVert` with :math:`w = P_x y` and
    :math:`\theta = \operatorname{atan2}(\lVert w\rVert, x\cdot y)` (accurate for nearby and for
    almost antipodal points; for :math:`y = -x` the direction is undefined and ``0`` is returned).

    :param torch.Tensor x: base points on :math:`S^n`, shape ``(..., n + 1)``.
    :param torch.Tensor y: target points on :math:`S^n`, broadcastable to ``x``.
    """
    w = tangent_projection(x, y)
    s = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    c = _dot(x, y)
    theta = torch.atan2(s, c)
    # theta / s = 1 / (rho sinc(theta)) with rho = (s^2 + c^2)^{1/2} (= 1 on the sphere); the
    # series of sinc near 0 keeps the value and the gradient finite at y = x
    denom = _sinc(theta) * torch.sqrt(s * s + c * c)
    return w / torch.where(denom > 0, denom, torch.ones_like(denom))


def log_sphere_area(n):
    r""":math:`\log|S^n| = \log\frac{2\pi^{(n+1)/2}}{\Gamma((n+1)/2)}`, the log surface area of the
    unit sphere in :math:`\mathbb R^{n+1}` (:math:`|S^1| = 2\pi`, :math:`|S^2| = 4\pi`).

    :param int n: the sphere's dimension :math:`n \ge 0` (a Python int).
    :returns: a Python float.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer (the sphere's dimension), got {n!r}")
    return math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma(0.5 * (n + 1))


def check_on_sphere(x, name="x", atol=None):
    r"""Raises ``ValueError`` naming ``name`` unless every row of ``x`` has
    :math:`|\lVert x\rVert - 1| \le` ``atol``; returns ``x``.

    One host synchronisation (skipped for tensors on the ``meta`` device, which hold no values).

    :param torch.Tensor x: points of shape ``(..., n + 1)``, ``n + 1 >= 2``, floating point.
    :param str name: the argument or site named in the message.
    :param float atol: the tolerance; default :math:`10^{-4}` in float32 and lower precisions,
        :math:`10^{-8}` in float64.
    """
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[-1] < 2 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"{name} must be a floating-point tensor of points on the sphere, shape (..., n + 1) "
            f"with n + 1 >= 2, got {got}"
        )
    if atol is None:
        atol = 1e-8 if x.dtype == torch.float64 else 1e-4
    if x.device.type == "meta":
        return x
    err = (torch.linalg.vector_norm(x.detach(), dim=-1) - 1).abs()
    bad = ~(err <= atol)  # also catches nan
    if bool(bad.any()):
        worst = err.nan_to_num(nan=math.inf).max()
        raise ValueError(
            f"{name} must lie on the unit sphere (| ||x|| - 1 | <= {atol:g}); "
            f"{int(bad.sum())} of {bad.numel()} points are off it (largest deviation "
            f"{float(worst):.3g}); normalise them, e.g. x / x.norm(dim=-1, keepdim=True)"
        )
    return x


def stereographic_chart(x):
    r"""Stereographic coordinates with a per-sample hemisphere flip.

    With :math:`s = \operatorname{sign}(x_{n+1})` (:math:`+1` for :math:`x_{n+1} = 0`),
    :math:`u = x_{1:n}/(1 + s\,x_{n+1}) = x_{1:n}/(1 + |x_{n+1}|)`, so :math:`\lVert u\rVert
    \le 1`.

    :param torch.Tensor x: points on :math:`S^n`, shape ``(..., n + 1)``.
    :returns: ``(u, s)``: coordinates ``(..., n)`` and signs ``(...,)`` (:math:`\pm1`, ``x``'s
        dtype).
    """
    last = x[..., -1]
    s = torch.where(last < 0, -torch.ones_like(last), torch.ones_like(last))
    u = x[..., :-1] / (1 + last.abs()).unsqueeze(-1)
    return u, s


def stereographic_inverse(u, s):
    r"""The point of :math:`S^n` with chart coordinates ``u`` in the hemisphere ``s``:
    :math:`x = (2u,\ s\,(1 - \lVert u\rVert^2))/(1 + \lVert u\rVert^2)`.

    :param torch.Tensor u: coordinates ``(..., n)`` (any point of :math:`\mathbb R^n`).
    :param torch.Tensor s: hemisphere signs ``(...,)``, as returned by :func:`stereographic_chart`.
    :returns: points of shape ``(..., n + 1)``.
    """
    r2 = (u * u).sum(-1, keepdim=True)
    denom = 1 + r2
    return torch.cat([2 * u / denom, s.unsqueeze(-1) * (1 - r2) / denom], dim=-1)


def stereographic_tangent(x, v):
    r"""Chart components of a tangent vector: the differential of :func:`stereographic_chart`.

    For :math:`v \in T_xS^n` and :math:`c = 1 + |x_{n+1}|` the coordinates are
    :math:`z = v_{1:n}/c - s\,x_{1:n} v_{n+1}/c^2`. If :math:`v = P_x\xi` with
    :math:`\xi \sim \mathcal N(0, I_{n+1})` (a standard Gaussian on :math:`T_xS^n`), then
    :math:`z \sim \mathcal N(0, G^{-1}(u))`, the chart's Brownian increment.

    :param torch.Tensor x: points on :math:`S^n`, shape ``(..., n + 1)``.
    :param torch.Tensor v: tangent vectors at ``x``, shape ``(..., n + 1)``.
    :returns: ``(..., n)``.
    """
    last = x[..., -1:]
    s = torch.where(last < 0, -torch.ones_like(last), torch.ones_like(last))
    c = 1 + last.abs()
    return v[..., :-1] / c - s * x[..., :-1] * v[..., -1:] / (c * c)


def stereographic_log_det_metric(u):
    r""":math:`\log|G(u)| = n\log 4 - 2n\log(1 + \lVert u\rVert^2)` for the stereographic metric
    :math:`g_{ij} = 4\delta_{ij}/(1 + \lVert u\rVert^2)^2`.

    :param torch.Tensor u: chart coordinates ``(..., n)``.
    :returns: ``(...,)``.
    """
    n = u.shape[-1]
    return n * math.log(4.0) - 2 * n * torch.log1p((u * u).sum(-1))
