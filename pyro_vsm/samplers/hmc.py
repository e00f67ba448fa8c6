"""Batched Hamiltonian Monte Carlo with one Metropolis decision per chain.

The state is a dict of tensors shaped ``[C, B, D_k]``: ``C`` chains, a batch ``B`` of independent
targets (for instance one posterior per data point) and the flattened variables of each site.
``potential_fn`` returns the potential energy of every (chain, target) pair, shape ``[C, B]``.
Because the chains do not interact, one backward pass of the summed energy gives every chain's
gradient, so Pyro's :func:`~pyro.ops.integrator.velocity_verlet` integrates all chains at once;
the accept/reject step is then taken per chain. The step size is one value per target (shape
``[B]``) and can be adapted toward a target acceptance rate with a Robbins–Monro update of its
logarithm.
"""

import math

import torch
from pyro.ops.integrator import velocity_verlet


def _kinetic_grad(r):
    return r  # identity mass matrix


def _kinetic_energy(r):
    return sum(0.5 * v.pow(2).sum(-1) for v in r.values())


class BatchedHMC:
    """One HMC transition per call of :meth:`step`, for ``C × B`` independent chains.

    :param potential_fn: maps a state dict to per-chain potential energies ``[C, B]``.
    :param step_size: initial leapfrog step size (float or tensor of shape ``[B]``).
    :param int num_steps: leapfrog steps per transition.
    :param float target_accept: acceptance rate the step size is adapted toward.
    :param float adapt_rate: gain of the update
        :math:`\\log\\epsilon \\leftarrow \\log\\epsilon + \\eta(\\bar a - a^*)`, where :math:`\\bar a`
        is the mean acceptance probability over the chains of a target; 0 disables adaptation.
    :param float jitter: each chain's step size is drawn uniformly from
        :math:`\\epsilon(1 \\pm \\text{jitter})` at every transition (0 disables it).
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
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if not torch.is_tensor(step_size) and not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        self.potential_fn = potential_fn
        self.num_steps = int(num_steps)
        self.target_accept = float(target_accept)
        self.adapt_rate = float(adapt_rate)
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self.jitter = float(jitter)
        self._initial_step_size = step_size
        self.log_step_size = None

    def _init_step(self, like):
        if self.log_step_size is None:
            s = torch.as_tensor(self._initial_step_size, dtype=like.dtype, device=like.device)
            self.log_step_size = s.log().expand(like.shape[1]).clone()

    @property
    def step_size(self):
        return None if self.log_step_size is None else self.log_step_size.exp()

    def step(self, state, potential=None, generator=None):
        """One transition of every chain.

        :param dict state: site name → tensor ``[C, B, D]``.
        :param potential: the current ``[C, B]`` potential energies, if known.
        :returns: ``(state, potential, accept_prob, accepted)``; the last two have shape
            ``[C, B]``. The last call of ``potential_fn`` was at the proposal, so a caller that
            caches quantities computed there can keep them where ``accepted`` is true.
        """
        like = next(iter(state.values()))
        self._init_step(like)
        if potential is None:
            with torch.no_grad():
                potential = self.potential_fn(state).detach()
        r = {
            k: torch.randn(v.shape, dtype=v.dtype, device=v.device, generator=generator)
            for k, v in state.items()
        }
        energy0 = potential + _kinetic_energy(r)

        last = {}

        def summed_potential(z):
            per_chain = self.potential_fn(z)
            last["value"] = per_chain.detach()
            return per_chain.sum()

        # a per-chain random step size (jitter) avoids trajectories that return to their start,
        # which a fixed step size and path length produce on near-Gaussian targets
        jitter = 1.0 + self.jitter * (
            2
            * torch.rand(like.shape[:2], dtype=like.dtype, device=like.device, generator=generator)
            - 1
        )
        eps = (self.log_step_size.exp() * jitter)[..., None]
        with torch.enable_grad():
            z_new, r_new, _, summed = velocity_verlet(
                {k: v.detach() for k, v in state.items()},
                r,
                summed_potential,
                _kinetic_grad,
                eps,
                self.num_steps,
            )
        # Pyro's integrator turns some numerical failures into a NaN total energy: reject those
        potential_new = torch.where(torch.isnan(summed), summed, last["value"])
        energy1 = potential_new + _kinetic_energy(r_new)
        delta = energy0 - energy1
        delta = torch.where(torch.isnan(delta), torch.full_like(delta, -math.inf), delta)
        accept_prob = delta.clamp(max=0.0).exp()
        u = torch.rand(accept_prob.shape, dtype=like.dtype, device=like.device, generator=generator)
        accept = u < accept_prob
        new_state = {
            k: torch.where(accept[..., None], z_new[k].detach(), v) for k, v in state.items()
        }
        potential = torch.where(accept, potential_new, potential)
        if self.adapt_rate:
            self.log_step_size = self.log_step_size + self.adapt_rate * (
                accept_prob.mean(0) - self.target_accept
            )
        return new_state, potential, accept_prob, accept
