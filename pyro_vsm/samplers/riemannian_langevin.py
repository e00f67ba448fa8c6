r"""Metropolis-adjusted Riemannian Langevin dynamics on the sphere :math:`S^n`.

The target is :math:`\pi(x) \propto e^{-E(x)}` with respect to the surface measure of
:math:`S^n \subset \mathbb R^{n+1}`. From :math:`x`, with the Riemannian gradient
:math:`g(x) = P_x\nabla E(x)` (:math:`P_x = I - xx^\top`) and :math:`\xi \sim \mathcal N(0,
I_{n+1})`, the proposal moves along the tangent vector

.. math::

    v = -\eta\,g(x) + \sqrt{2\eta}\,P_x\xi \;\sim\; \mathcal N\big(m(x), 2\eta P_x\big)
    \ \text{on } T_xS^n, \qquad m(x) = -\eta\,g(x),

and retracts: ``retraction="exp"`` (default) :math:`x' = \exp_x(v)`, or ``"normalize"``
:math:`x' = (x + v)/\lVert x + v\rVert`. Both maps have tractable densities, so the proposal
:math:`q(x'|x)` is known exactly and the chain is exact:

* exponential map: for :math:`\lVert v\rVert < \pi` the map is one-to-one with
  :math:`v = \log_x(x')` and surface Jacobian :math:`(\sin\lVert v\rVert/\lVert v\rVert)^{n-1}`;
  a draw with :math:`\lVert v\rVert \ge \pi` (it would wrap around the sphere) is rejected;
* normalisation (the inverse gnomonic projection): one-to-one from :math:`T_xS^n` onto the open
  hemisphere :math:`x\cdot x' > 0`, with :math:`v = x'/(x\cdot x') - x` and Jacobian
  :math:`(x\cdot x')^{-(n+1)}`.

The reverse move uses :math:`v_r = \log_{x'}(x)` (or :math:`x/(x\cdot x') - x'`). In both cases
the Jacobian takes the same value forward and backward (:math:`\lVert v_r\rVert = \lVert v\rVert`,
the geodesic distance; :math:`x\cdot x'` is symmetric), so it cancels and the Metropolis--Hastings
ratio is

.. math::

    \log\alpha = E(x) - E(x') + \frac{\lVert v - m(x)\rVert^2 - \lVert v_r - m(x')\rVert^2}
                                     {4\eta}.

With ``adjusted=False`` every proposal is accepted (geodesic Langevin; its stationary law is
biased by :math:`O(\eta)`).

In the "kernel" shape of BlackJAX's ``mcmc`` modules: a small state
(:class:`RiemannianLangevinState`), :func:`init` and a pure :func:`step` that returns the new
state and a :class:`RiemannianLangevinInfo`, plus the loop :func:`riemannian_langevin` and a
``sampler=`` object :class:`RiemannianLangevinSampler` for
:class:`~pyro_vsm.distributions.EnergyDistribution` sites on the sphere. Chains are batched:
positions have shape ``(*chains, n + 1)`` and the energy returns ``(*chains,)``; new tensors take
the positions' dtype and device; states are detached.

References:

[1] `Riemann manifold Langevin and Hamiltonian Monte Carlo methods`,
    Mark Girolami, Ben Calderhead (2011)
[2] `Geodesic Monte Carlo on Embedded Manifolds`,
    Simon Byrne, Mark Girolami (2013)
"""

import math
import numbers
from typing import NamedTuple

import torch

from .._checks import positive_int as _positive_int
from ..ops.sphere import exp_map, log_map, normalize_retraction, tangent_projection

__all__ = [
    "RiemannianLangevinInfo",
    "RiemannianLangevinSampler",
    "RiemannianLangevinState",
    "riemannian_langevin",
    "riemannian_langevin_init",
    "riemannian_langevin_step",
]

_RETRACTIONS = ("exp", "normalize")


class RiemannianLangevinState(NamedTuple):
    r"""The state of a batch of chains (all detached)."""

    #: positions on the sphere, ``(*chains, n + 1)``
    position: torch.Tensor
    #: energies :math:`E(x)`, ``(*chains,)``
    energy: torch.Tensor
    #: Riemannian gradients :math:`P_x\nabla E(x)`, ``(*chains, n + 1)``
    energy_grad: torch.Tensor


class RiemannianLangevinInfo(NamedTuple):
    r"""What one :func:`riemannian_langevin_step` did, per chain."""

    #: Metropolis--Hastings acceptance probability, ``(*chains,)`` (ones when unadjusted)
    acceptance_rate: torch.Tensor
    #: whether the proposal was taken, ``(*chains,)``
    is_accepted: torch.Tensor
    #: the proposed positions, ``(*chains, n + 1)``
    proposal: torch.Tensor


def _energy_and_grad(energy, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        if not torch.is_tensor(e) or e.shape != x.shape[:-1]:
            got = tuple(e.shape) if torch.is_tensor(e) else type(e).__name__
            raise ValueError(
                f"the energy returned {got} for positions of shape {tuple(x.shape)}; expected "
                f"one value per chain, shape {tuple(x.shape[:-1])}"
            )
        g = None
        if e.requires_grad:  # an energy that ignores x has no graph
            (g,) = torch.autograd.grad(e.sum(), x, allow_unused=True)
    g = torch.zeros_like(x) if g is None else g
    x = x.detach()
    return e.detach(), tangent_projection(x, g.detach())


def _check_position(x):
    if not torch.is_tensor(x) or x.dim() < 1 or x.shape[-1] < 2 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"position must be a floating-point tensor of points on S^n, shape (*chains, n + 1) "
            f"with n >= 1, got {got}"
        )
    return x.detach()


def _check_step_size(step_size, like):
    r"""A positive float, or a tensor broadcastable to the chains shape; returns ``(*chains, 1)``
    broadcastable tensor or float."""
    if torch.is_tensor(step_size):
        eta = step_size.detach().to(dtype=like.dtype, device=like.device)
        if eta.device.type != "meta" and not bool(((eta > 0) & torch.isfinite(eta)).all()):
            raise ValueError("step_size must be positive and finite")
        return eta.unsqueeze(-1)
    ok = isinstance(step_size, numbers.Real) and not isinstance(step_size, bool)
    if not (ok and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    return float(step_size)


def riemannian_langevin_init(position, energy):
    r"""The initial :class:`RiemannianLangevinState` at ``position`` (normalised to the sphere).

    :param torch.Tensor position: ``(*chains, n + 1)``.
    :param energy: callable ``x -> E(x)`` with shape ``(*chains,)``.
    """
    x = _check_position(position)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    e, g = _energy_and_grad(energy, x)
    return RiemannianLangevinState(x, e, g)


def riemannian_langevin_step(
    state, energy, step_size, *, retraction="exp", adjusted=True, generator=None
):
    r"""One Riemannian Langevin proposal per chain with its Metropolis--Hastings correction
    (module docstring).

    :param RiemannianLangevinState state: from :func:`riemannian_langevin_init` or a previous step.
    :param energy: callable ``x -> E(x)`` with shape ``(*chains,)``.
    :param step_size: :math:`\eta > 0`, a float or a tensor of shape ``(*chains,)``.
    :param str retraction: ``"exp"`` or ``"normalize"``.
    :param bool adjusted: apply the Metropolis--Hastings correction (exact chain).
    :param torch.Generator generator: optional source of the noise and of the accept draws.
    :returns: ``(new_state, info)``.
    """
    if retraction not in _RETRACTIONS:
        raise ValueError(f"retraction must be one of {_RETRACTIONS}, got {retraction!r}")
    x, e, g = state
    eta = _check_step_size(step_size, x)
    xi = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    mean = -eta * g
    v = mean + math.sqrt(2.0) * (eta**0.5) * tangent_projection(x, xi)
    if retraction == "exp":
        proposal = exp_map(x, v)
    else:
        proposal = normalize_retraction(x, v)
    e_new, g_new = _energy_and_grad(energy, proposal)
    if not adjusted:
        ones = torch.ones_like(e)
        info = RiemannianLangevinInfo(ones, ones.bool(), proposal)
        return RiemannianLangevinState(proposal, e_new, g_new), info
    if retraction == "exp":
        v_rev = log_map(proposal, x)
        valid = torch.linalg.vector_norm(v, dim=-1) < math.pi  # no wrap-around
    else:
        v_rev = x / (x * proposal).sum(-1, keepdim=True) - proposal
        valid = torch.ones_like(e, dtype=torch.bool)
    mean_new = -eta * g_new
    log_forward = (v - mean).pow(2).sum(-1)
    log_backward = (v_rev - mean_new).pow(2).sum(-1)
    eta_c = eta.squeeze(-1) if torch.is_tensor(eta) else eta
    log_ratio = e - e_new + (log_forward - log_backward) / (4 * eta_c)
    bad = torch.isnan(log_ratio) | ~valid
    log_ratio = torch.where(bad, torch.full_like(log_ratio, -math.inf), log_ratio)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    u = torch.rand(accept_prob.shape, dtype=x.dtype, device=x.device, generator=generator)
    accept = u < accept_prob
    keep = accept.unsqueeze(-1)
    new_state = RiemannianLangevinState(
        torch.where(keep, proposal, x),
        torch.where(accept, e_new, e),
        torch.where(keep, g_new, g),
    )
    return new_state, RiemannianLangevinInfo(accept_prob, accept, proposal)


def riemannian_langevin(
    energy, x0, step_size, num_steps, *, retraction="exp", adjusted=True, generator=None
):
    r"""Runs ``num_steps`` of :func:`riemannian_langevin_step` from ``x0``.

    :param energy: callable ``x -> E(x)`` with shape ``(*chains,)``.
    :param torch.Tensor x0: initial positions ``(*chains, n + 1)`` (normalised to the sphere).
    :param step_size: :math:`\eta > 0`, a float or a tensor of shape ``(*chains,)``.
    :param int num_steps: number of steps.
    :param str retraction: ``"exp"`` or ``"normalize"``.
    :param bool adjusted: apply the Metropolis--Hastings correction.
    :param torch.Generator generator: optional source of randomness.
    :returns: ``(samples, acceptance_rate)``: the final positions (detached) and each chain's
        acceptance probability averaged over the steps, ``(*chains,)``.
    """
    num_steps = _positive_int(num_steps, "num_steps")
    state = riemannian_langevin_init(x0, energy)
    total = torch.zeros_like(state.energy)
    for _ in range(num_steps):
        state, info = riemannian_langevin_step(
            state, energy, step_size, retraction=retraction, adjusted=adjusted, generator=generator
        )
        total = total + info.acceptance_rate
    return state.position, total / num_steps


class RiemannianLangevinSampler:
    r"""``sampler=`` for an :class:`~pyro_vsm.distributions.EnergyDistribution` on the sphere:
    ``num_steps`` of :func:`riemannian_langevin` on its potential from uniform initial points.

    Called as ``sampler(target, shape)`` with ``shape = (*chains, n + 1)``; the chains use the
    dtype and device of the energy's parameters (or the default dtype on the CPU).
    ``acceptance_rate`` holds the mean acceptance of the last call.

    :param step_size: :math:`\eta > 0`.
    :param int num_steps: number of steps.
    :param str retraction: ``"exp"`` or ``"normalize"``.
    :param bool adjusted: Metropolis--Hastings correction.
    :param torch.Generator generator: optional source of randomness.
    """

    def __init__(self, step_size, num_steps, *, retraction="exp", adjusted=True, generator=None):
        _check_step_size(step_size, torch.empty(()))
        if retraction not in _RETRACTIONS:
            raise ValueError(f"retraction must be one of {_RETRACTIONS}, got {retraction!r}")
        self.step_size = step_size
        self.num_steps = _positive_int(num_steps, "num_steps")
        self.retraction = retraction
        self.adjusted = bool(adjusted)
        self.generator = generator
        self.acceptance_rate = None

    def __call__(self, target, shape):
        potential = getattr(target, "potential", target)
        energy = getattr(target, "energy", target)
        like = torch.empty((), dtype=torch.get_default_dtype())
        if isinstance(energy, torch.nn.Module):
            for t in list(energy.parameters()) + list(energy.buffers()):
                like = t.detach()
                break
        x0 = torch.randn(
            torch.Size(shape), dtype=like.dtype, device=like.device, generator=self.generator
        )
        x, acc = riemannian_langevin(
            potential,
            x0,
            self.step_size,
            self.num_steps,
            retraction=self.retraction,
            adjusted=self.adjusted,
            generator=self.generator,
        )
        self.acceptance_rate = acc.mean()
        return x
