r"""Unadjusted Langevin dynamics (ULA) as a kernel, and the ``sampler=`` object for energies.

All samplers run many independent chains at once: ``z0`` has shape ``(*chains, *event)`` and the
energy maps it to per-chain energies of shape ``chains``; the event dims are the trailing
``z0.dim() - E(z0).dim()`` dims (one, ``d``, for the energies of
:mod:`pyro_vsm.distributions.energies`). Gradients are per sample: one backward pass of
:math:`\sum_c E(z_c)` gives every chain's :math:`\nabla E(z_c)` because the chains do not
interact (the energy is never averaged over the batch, which would shrink every gradient by the
number of chains). New tensors take ``z0``'s dtype and device; returned tensors are detached.

* :func:`langevin`: :math:`z \leftarrow z - \eta\nabla E(z) + \sqrt{2\eta}\,\xi`,
  :math:`\xi \sim \mathcal N(0, I)` (eq. 13 of "Variational inference with unnormalized priors");
  its stationary law is biased by :math:`O(\eta)`;
* :class:`LangevinSampler`: ``sampler=`` for :class:`~pyro_vsm.distributions.EnergyDistribution`,
  unadjusted or Metropolis-adjusted (:func:`~pyro_vsm.samplers.mala`).

References:

[1] `Exponential convergence of Langevin distributions and their discrete approximations`,
    Gareth O. Roberts, Richard L. Tweedie (1996)
"""

import torch

from .._checks import positive_int
from ._common import check_z0, energy_and_grad, randn, step_size_tensor
from .mala import mala

# the private names under which other sampler modules have imported these helpers
_check_z0 = check_z0
_step_size = step_size_tensor
_energy_and_grad = energy_and_grad
_randn = randn

__all__ = ["LangevinSampler", "langevin", "langevin_kernel"]


def langevin_kernel(z, energy, step_size, generator=None):
    r"""One unadjusted Langevin step of every chain,
    :math:`z' = z - \eta\nabla E(z) + \sqrt{2\eta}\,\xi`.

    :param torch.Tensor z: states ``(*chains, *event)``.
    :param energy: callable ``z -> E(z)`` with one value per chain.
    :param torch.Tensor step_size: :math:`\eta`, a tensor broadcastable to ``z``.
    :param torch.Generator generator: optional source of the noise.
    :returns: the new states, detached.
    """
    _, grad = energy_and_grad(energy, z)
    return (z - step_size * grad + (2 * step_size).sqrt() * randn(z, generator)).detach()


def langevin(energy, z0, step_size, num_steps, generator=None):
    r"""Unadjusted Langevin dynamics,
    :math:`z_{k+1} = z_k - \eta\nabla E(z_k) + \sqrt{2\eta}\,\xi_k`.

    :param energy: callable ``z -> E(z)`` with one value per chain (shape a prefix of ``z``'s).
    :param torch.Tensor z0: initial states ``(*chains, *event)``, e.g. ``(n, d)``.
    :param step_size: :math:`\eta > 0`, a float or a tensor broadcastable to ``z0`` (a per-dim
        step is a diagonal preconditioner).
    :param int num_steps: number of updates.
    :param torch.Generator generator: optional source of the noise (on ``z0``'s device).
    :returns: the final states, detached, shape of ``z0``.
    """
    z = check_z0(z0)
    num_steps = positive_int(num_steps, "num_steps")
    eta = step_size_tensor(step_size, z)
    for _ in range(num_steps):
        z = langevin_kernel(z, energy, eta, generator)
    return z


def _reference(target):
    r"""A tensor with the dtype/device of ``target``'s parameters (energy, then base)."""
    energy = getattr(target, "energy", target)
    if isinstance(energy, torch.nn.Module):
        for t in list(energy.parameters()) + list(energy.buffers()):
            return t.detach()
    base = getattr(target, "base", None)
    if base is not None:
        return base.sample().detach()
    return torch.empty((), dtype=torch.get_default_dtype())


class LangevinSampler:
    r"""``sampler=`` for :class:`~pyro_vsm.distributions.EnergyDistribution`: ``num_steps`` of
    :func:`langevin` (or :func:`~pyro_vsm.samplers.mala` with ``adjusted=True``) on the
    distribution's potential :math:`E(z) - \log b(z)`, from
    :math:`\mathcal N(\text{init_loc}, \text{init_scale}^2 I)`.

    Called as ``sampler(target, shape)``, where ``target`` is an ``EnergyDistribution`` or a plain
    energy callable; the chains use the dtype and device of the energy's parameters.
    ``acceptance_rate`` holds the mean acceptance of the last ``adjusted`` call.

    :param step_size: :math:`\eta > 0`.
    :param int num_steps: number of updates.
    :param bool adjusted: Metropolis-adjusted (MALA) instead of ULA.
    :param init_loc: mean of the initial states.
    :param init_scale: standard deviation of the initial states.
    :param torch.Generator generator: optional source of the draws.
    """

    def __init__(
        self,
        step_size,
        num_steps,
        *,
        adjusted=False,
        init_loc=0.0,
        init_scale=1.0,
        generator=None,
    ):
        step_size_tensor(step_size, torch.empty(()))  # validates
        self.step_size = step_size
        self.num_steps = positive_int(num_steps, "num_steps")
        self.adjusted = bool(adjusted)
        self.init_loc = init_loc
        self.init_scale = init_scale
        self.generator = generator
        self.acceptance_rate = None

    def __call__(self, target, shape):
        potential = getattr(target, "potential", target)
        like = _reference(target)
        eps = torch.randn(
            torch.Size(shape), dtype=like.dtype, device=like.device, generator=self.generator
        )
        z0 = self.init_loc + self.init_scale * eps
        if not self.adjusted:
            return langevin(potential, z0, self.step_size, self.num_steps, self.generator)
        z, acc = mala(potential, z0, self.step_size, self.num_steps, self.generator)
        self.acceptance_rate = acc.mean()
        return z
