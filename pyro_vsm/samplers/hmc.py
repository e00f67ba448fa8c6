r"""Hamiltonian Monte Carlo as a kernel: a small state and one pure transition function.

Many independent chains move at once: a position has shape ``(*chains, *event)`` and the
potential function returns one energy per chain (shape ``chains``) together with its gradient
(shape of the position). Because the chains do not interact, one backward pass of the summed
energy gives every chain's gradient. One transition

1. refreshes the momentum, fully (:math:`p \sim \mathcal N(0, I)`) or partially,
   :math:`p \leftarrow \alpha p + \sqrt{1-\alpha^2}\,\xi` (``persistence`` :math:`\alpha`, the
   generalised HMC of Horowitz);
2. takes ``num_steps`` leapfrog steps of size :math:`\epsilon` (one value per chain, or per
   chain and dimension, which acts as a diagonal mass matrix);
3. accepts the end point per chain with probability
   :math:`\min(1, e^{H(z, p) - H(z', p')})`, :math:`H = U + \tfrac12\|p\|^2`
   (:func:`~pyro_vsm.samplers.metropolis.metropolis_accept`; non-finite proposals are rejected);
   a rejected chain keeps its position and negates its momentum, which leaves the joint law of
   position and momentum invariant when the momentum persists.

The state carries the potential and gradient at the current position (and any per-chain extras
``aux`` that the potential function returns, e.g. the parts of an annealed energy), so a
transition costs ``num_steps`` evaluations. :class:`BatchedHMC` wraps the kernel with a step size
adapted per target for states given as dicts of ``[C, B, D]`` tensors.

References:

[1] `MCMC using Hamiltonian dynamics`,
    Radford M. Neal (2011)

[2] `A generalized guided Monte Carlo algorithm`,
    Alan M. Horowitz (1991)
"""

import math
from typing import NamedTuple

import torch

from .._checks import positive_int
from ._common import energy_and_grad, expand_chains, per_chain, randn
from .adaptation import StepSizeAdaptation
from .metropolis import metropolis_accept, select

__all__ = ["BatchedHMC", "HMCInfo", "HMCState", "autograd_potential", "hmc_init", "hmc_kernel"]


class HMCState(NamedTuple):
    r"""State of a batch of HMC chains.

    :ivar position: ``(*chains, *event)``.
    :ivar momentum: the momentum, shaped like ``position`` (kept when it persists).
    :ivar potential: the potential energy at ``position``, shape ``chains``.
    :ivar grad: its gradient, shaped like ``position``.
    :ivar aux: a tuple of per-chain extras returned by the potential function at ``position``.
    """

    position: torch.Tensor
    momentum: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor
    aux: tuple


class HMCInfo(NamedTuple):
    r"""What one transition did, per chain.

    :ivar accept_prob: the Metropolis acceptance probability, shape ``chains``.
    :ivar accepted: the boolean decisions, shape ``chains``.
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor


def autograd_potential(potential_fn):
    r"""Turns ``position -> U`` (one value per chain) into the
    ``position -> (U, grad U, ())`` function the kernel expects, by autograd.

    :param potential_fn: callable returning the potential energy of every chain.
    :returns: the wrapped callable.
    """

    def fn(position):
        u, g = energy_and_grad(potential_fn, position)
        return u, g, ()

    return fn


def hmc_init(position, potential_fn, momentum=None, generator=None):
    r"""The kernel state at ``position``.

    :param torch.Tensor position: ``(*chains, *event)``.
    :param potential_fn: ``position -> (U, grad U, aux)`` (see :func:`autograd_potential`).
    :param torch.Tensor momentum: initial momentum; drawn from :math:`\mathcal N(0, I)` if not
        given.
    :param torch.Generator generator: optional source of the momentum draw.
    :returns: an :class:`HMCState`.
    """
    position = position.detach()
    u, g, aux = potential_fn(position)
    if momentum is None:
        momentum = randn(position, generator)
    return HMCState(position, momentum, u, g, tuple(aux))


def hmc_kernel(state, potential_fn, step_size, num_steps=1, *, persistence=0.0, generator=None):
    r"""One HMC transition of every chain.

    :param HMCState state: the current state (from :func:`hmc_init` or a previous transition).
    :param potential_fn: ``position -> (U, grad U, aux)``; it is called at the leapfrog points,
        last at the proposal.
    :param step_size: leapfrog step :math:`\epsilon`: a float or a tensor broadcastable to the
        position (per chain: shape ``(*chains, 1, ...)``; per dimension: a diagonal mass matrix).
    :param int num_steps: leapfrog steps per transition.
    :param float persistence: :math:`\alpha \in [0, 1)` of the partial momentum refresh (0: a
        fresh momentum at every transition).
    :param torch.Generator generator: optional source of the momentum and uniform draws.
    :returns: ``(state, info)``: the new :class:`HMCState` and an :class:`HMCInfo`.
    """
    z, p0, u0, g0, aux0 = state
    chain_dims = u0.dim()
    xi = randn(z, generator)
    p = p0.mul(persistence).add_(xi, alpha=math.sqrt(1.0 - persistence**2)) if persistence else xi
    eps = step_size
    half = 0.5 * eps
    pn = torch.addcmul(p, half, g0, value=-1) if torch.is_tensor(eps) else p - half * g0
    zn = z
    for i in range(num_steps):
        zn = torch.addcmul(zn, eps, pn) if torch.is_tensor(eps) else zn + eps * pn
        un, gn, auxn = potential_fn(zn)
        if i < num_steps - 1:
            pn = torch.addcmul(pn, eps, gn, value=-1) if torch.is_tensor(eps) else pn - eps * gn
    pn = torch.addcmul(pn, half, gn, value=-1) if torch.is_tensor(eps) else pn - half * gn
    kinetic = _squared_norm(p, chain_dims) - _squared_norm(pn, chain_dims)
    accept_prob, accepted = metropolis_accept(torch.add(u0 - un, kinetic, alpha=0.5), generator)
    # one materialised mask for the three selections: torch.where with a broadcast mask is
    # about twice as slow on small events
    mask = expand_chains(accepted, z).expand(z.shape).contiguous()
    new = HMCState(
        torch.where(mask, zn, z),
        torch.where(mask, pn, -p) if persistence else pn,
        torch.where(accepted, un, u0),
        torch.where(mask, gn, g0),
        select(accepted, tuple(auxn), aux0),
    )
    return new, HMCInfo(accept_prob, accepted)


def _squared_norm(p, chain_dims):
    if p.dim() == chain_dims + 1:
        return torch.linalg.vecdot(p, p)
    return per_chain(p * p, chain_dims)


class BatchedHMC:
    r"""One HMC transition per call of :meth:`step`, for ``C × B`` independent chains.

    The state is a dict of tensors shaped ``[C, B, D_k]``: ``C`` chains, a batch ``B`` of
    independent targets (for instance one posterior per data point) and the flattened variables of
    each site. The step size is one value per target, adapted toward ``target_accept`` with
    :class:`~pyro_vsm.samplers.adaptation.StepSizeAdaptation`.

    :param potential_fn: maps a state dict to per-chain potential energies ``[C, B]``.
    :param step_size: initial leapfrog step size (float or tensor of shape ``[B]``).
    :param int num_steps: leapfrog steps per transition.
    :param float target_accept: acceptance rate the step size is adapted toward.
    :param float adapt_rate: gain of the update
        :math:`\log\epsilon \leftarrow \log\epsilon + \eta(\bar a - a^*)`, where :math:`\bar a`
        is the mean acceptance probability over the chains of a target; 0 disables adaptation.
    :param float jitter: each chain's step size is drawn uniformly from
        :math:`\epsilon(1 \pm \text{jitter})` at every transition (0 disables it).
    """

    def __init__(
        self,
        potential_fn,
        step_size=0.1,
        num_steps=10,
        target_accept=0.65,
        adapt_rate=0.05,
        jitter=0.5,
    ):
        self.adaptation = StepSizeAdaptation(step_size, target_accept, adapt_rate, jitter)
        self.potential_fn = potential_fn
        self.num_steps = positive_int(num_steps, "num_steps")
        self.log_step_size = None

    @property
    def step_size(self):
        r"""The current step size per target, shape ``[B]`` (``None`` before the first step)."""
        return None if self.log_step_size is None else self.log_step_size.exp()

    def step(self, state, potential=None, generator=None):
        r"""One transition of every chain.

        :param dict state: site name → tensor ``[C, B, D]``.
        :param potential: the current ``[C, B]`` potential energies, if known (unused: the
            kernel evaluates the potential and its gradient at the current state).
        :param torch.Generator generator: optional source of the random draws.
        :returns: ``(state, potential, accept_prob, accepted)``; the last two have shape
            ``[C, B]``. The last call of ``potential_fn`` was at the proposal, so a caller that
            caches quantities computed there can keep them where ``accepted`` is true.
        """
        names = list(state)
        sizes = [state[k].shape[-1] for k in names]
        flat = torch.cat([state[k].detach() for k in names], -1)
        if self.log_step_size is None:
            self.log_step_size = self.adaptation.init(flat.shape[1:2], flat)

        def unflat(z):
            return dict(zip(names, torch.split(z, sizes, -1), strict=True))

        fn = autograd_potential(lambda z: self.potential_fn(unflat(z)))
        current = hmc_init(flat, fn, momentum=torch.zeros_like(flat))
        eps = self.adaptation.sample(self.log_step_size, flat.shape[:1], generator)[..., None]
        new, info = hmc_kernel(current, fn, eps, self.num_steps, generator=generator)
        self.log_step_size = self.adaptation.update(self.log_step_size, info.accept_prob)
        return unflat(new.position), new.potential, info.accept_prob, info.accepted
