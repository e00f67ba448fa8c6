r"""Minimum-velocity estimate of the Riemannian score-matching objective on the sphere
(Wang et al. 2020, Section 4.1 and Appendix C).

For an energy :math:`E` defined on a neighbourhood of :math:`S^n \subset \mathbb R^{n+1}` (the
model :math:`q \propto e^{-E}` with respect to the surface measure) and data :math:`x \in S^n`,
the Riemannian (Mardia et al. 2016) score-matching integrand is

.. math::

    J(x) = \tfrac12\lVert P\nabla E(x)\rVert^2 - \Delta_S E(x), \qquad
    \Delta_S E = \operatorname{tr}(P\nabla^2E) - n\,x^\top\nabla E, \qquad P = I - xx^\top,

with :math:`P\nabla E` the Riemannian gradient and :math:`\Delta_S` the Laplace--Beltrami
operator (for a linear :math:`E = \mu^\top x`, :math:`\Delta_S E = -n\mu^\top x`). One step of
Riemannian Langevin dynamics targeting :math:`q^{1/2}` from :math:`x`, with
:math:`\xi \sim \mathcal N(0, I_{n+1})`, gives the estimate

.. math::

    \hat J_\epsilon(x, \xi) = \frac{E(x) - E(x^-) + \sqrt{2\epsilon}\,(P\nabla E(x))\cdot\xi}
                                   {\epsilon}
    \;\xrightarrow[\epsilon\to0]{\ \mathbb E_\xi\ }\; J(x),

where :math:`x^-` is one of

* ``retraction="normalize"`` (default) or ``"exp"``: the extrinsic step
  :math:`v = -\frac\epsilon2P\nabla E(x) + \sqrt{2\epsilon}\,P\xi` followed by
  :math:`x^- = (x + v)/\lVert x + v\rVert` or :math:`x^- = \exp_x(v)`. Both retractions agree with
  the geodesic to second order, :math:`x^- = x + v - \tfrac12\lVert v\rVert^2x + O(\lVert
  v\rVert^3)`, and the :math:`-\tfrac12\lVert v\rVert^2x` term supplies the
  :math:`-n\,x^\top\nabla E` part of :math:`\Delta_S E` (skipping the retraction is biased);
* ``retraction="chart"``: the local-coordinate step of eq. 18 in the stereographic chart of
  :func:`pyro_vsm.ops.stereographic_chart` (each sample in the chart of its own hemisphere, as
  Remark C.2 allows),

  .. math::

      u^- = u + \epsilon\Big(-\tfrac12 g^{ij}\partial_j\big(E - \log|G|\big) + \partial_j
      g^{ij}\Big) + \sqrt{2\epsilon}\,z, \qquad z \sim \mathcal N(0, G^{-1}(u)),

  with :math:`g^{ij} = \tfrac14(1 + \lVert u\rVert^2)^2\delta^{ij}`; the drift simplifies to
  :math:`-\tfrac18(1 + \lVert u\rVert^2)^2\partial_uE + (1 - \tfrac n2)(1 + \lVert
  u\rVert^2)\,u`. **The paper prints** :math:`E + \log|G|` **(a sign error)**: only
  :math:`E - \log|G|` keeps the uniform distribution stationary; the printed sign biases
  :math:`\hat J` by :math:`g^{ij}\partial_iE\,\partial_j\log|G|`. The chart noise is the pushforward
  :math:`z = d\phi^{-1}(P\xi)` of the same :math:`\xi`, so the control variate
  :math:`\sqrt{2\epsilon}\,\partial_iE\,z^i` equals the extrinsic one and all three variants
  share common random numbers.

The extrinsic step is the simpler and the lower-variance estimator. As in the Euclidean case
(``langevin_mvl``) the sign of the paper's eq. 17 is reversed and the value is divided by
:math:`\epsilon` so that it estimates :math:`J` itself; the control variate keeps the variance
bounded as :math:`\epsilon \to 0` (without it the variance grows like :math:`1/\epsilon`). The
parameter gradient flows through :math:`x^-` (the input gradient is taken with
``create_graph=True``) and through the control variate. The bias is :math:`O(\epsilon)`; in
float32 the difference :math:`E(x) - E(x^-)` loses about :math:`|E|\,u/\epsilon` to rounding, so
use :math:`\epsilon \gtrsim 10^{-3}` there (or float64).

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
[2] `Score matching estimators for directional distributions`,
    Kanti V. Mardia, John T. Kent, Arnab K. Laha (2016)
"""

import math

import torch
from pyro.infer.util import is_validation_enabled
from torch.nn.utils import parametrize

from ...ops.sphere import (
    check_on_sphere,
    exp_map,
    normalize_retraction,
    stereographic_chart,
    stereographic_inverse,
    stereographic_tangent,
    tangent_projection,
)
from ._checks import check_energy, check_inputs

__all__ = ["sphere_mvl"]

_RETRACTIONS = ("normalize", "exp", "chart")
_FN = "sphere_mvl"


def _check(energy, x, step_size, retraction, noise, generator):
    if retraction not in _RETRACTIONS:
        raise ValueError(f"{_FN}: retraction must be one of {_RETRACTIONS}, got {retraction!r}")
    x, step_size, noise = check_inputs(_FN, energy, x, step_size, noise, generator, min_dim=2)
    if is_validation_enabled():
        check_on_sphere(x, name=f"{_FN}: x")
    return x, step_size, noise


def _energy(energy, x):
    return check_energy(_FN, energy(x), x)


def _grad(e, wrt):
    if not e.requires_grad:
        raise ValueError(f"{_FN}: energy(x) is not differentiable in x (no autograd graph)")
    (g,) = torch.autograd.grad(e.sum(), wrt, create_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def _extrinsic(energy, x, eps, xi, retraction, control_variate):
    x0 = x.detach().requires_grad_(True)
    e0 = _energy(energy, x0)
    pg = tangent_projection(x, _grad(e0, x0))
    scale = math.sqrt(2 * eps)
    v = -0.5 * eps * pg + scale * tangent_projection(x, xi)
    moved = normalize_retraction(x, v) if retraction == "normalize" else exp_map(x, v)
    diff = e0 - _energy(energy, moved)
    if control_variate:
        diff = diff + scale * (pg * xi).sum(-1)
    return diff / eps


def _chart(energy, x, eps, xi, control_variate, log_det_sign=-1.0):
    r"""The chart variant; ``log_det_sign=+1`` gives the drift as printed in the paper
    (:math:`E + \log|G|`, biased), kept for the tests."""
    n = x.shape[-1] - 1
    u0, s = stereographic_chart(x)
    u = u0.detach().requires_grad_(True)
    y = stereographic_inverse(u, s)
    # evaluate E at exactly x (no round trip through the chart) with the chart's derivative
    e0 = _energy(energy, x + (y - y.detach()))
    gu = _grad(e0, u)
    r2 = (u0 * u0).sum(-1, keepdim=True)
    inv_metric = 0.25 * (1 + r2) ** 2  # g^{ij} = inv_metric * delta_ij
    # -g^{ij} d_j(E -/+ log|G|)/2 + d_j g^{ij}, with d_j log|G| = -4 n u_j / (1 + |u|^2) and
    # d_j g^{ij} = (1 + |u|^2) u_i
    drift = -0.5 * inv_metric * gu + log_det_sign * 0.5 * n * (1 + r2) * u0 + (1 + r2) * u0
    z = stereographic_tangent(x, tangent_projection(x, xi))
    scale = math.sqrt(2 * eps)
    moved = stereographic_inverse(u0 + eps * drift + scale * z, s)
    diff = e0 - _energy(energy, moved)
    if control_variate:
        diff = diff + scale * (gu * z).sum(-1)
    return diff / eps


def sphere_mvl(
    energy,
    x,
    step_size,
    *,
    control_variate=True,
    retraction="normalize",
    noise=None,
    generator=None,
):
    r"""Minimum-velocity estimate of :math:`J(x) = \tfrac12\lVert P\nabla E\rVert^2 -
    \Delta_S E` for points ``x`` on :math:`S^n` (module docstring for the three steps).

    Cost: two evaluations of the energy and one input gradient (with ``create_graph``).

    :param energy: callable ``x[..., n + 1] -> E[...]``, defined (and differentiable) on a
        neighbourhood of the sphere; only its values on the sphere matter.
    :param torch.Tensor x: data ``[B, n + 1]`` on the unit sphere (detached); with Pyro's
        validation enabled (the default), rows off the sphere by more than :math:`10^{-4}`
        (float32) or :math:`10^{-8}` (float64) raise ``ValueError`` (one host synchronisation).
    :param float step_size: :math:`\epsilon > 0`.
    :param bool control_variate: add :math:`\sqrt{2\epsilon}\,(P\nabla E)\cdot\xi`.
    :param str retraction: ``"normalize"``, ``"exp"`` or ``"chart"``.
    :param torch.Tensor noise: ambient :math:`\xi` ``[B, n + 1]`` (common random numbers; only
        its tangent part :math:`P\xi` enters), or ``None``.
    :param torch.Generator generator: draws :math:`\xi` when ``noise`` is ``None``.
    :returns: :math:`\hat J_\epsilon` per data point, shape ``[B]``.
    """
    x, eps, noise = _check(energy, x, step_size, retraction, noise, generator)
    xi = noise
    if xi is None:
        xi = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    with torch.enable_grad(), parametrize.cached():
        if retraction == "chart":
            return _chart(energy, x, eps, xi, control_variate)
        return _extrinsic(energy, x, eps, xi, retraction, control_variate)
