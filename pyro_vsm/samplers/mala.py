r"""Metropolis-adjusted Langevin (MALA) as a kernel.

The Langevin proposal :math:`z' = z - \eta\nabla E(z) + \sqrt{2\eta}\,\xi` is accepted per chain
with probability

.. math::

    \min\Big(1, \exp\big(E(z) - E(z') + \log q(z|z') - \log q(z'|z)\big)\Big), \qquad
    \log q(z'|z) = -\frac{\|z' - z + \eta\nabla E(z)\|^2}{4\eta} + \text{const}.

This is exactly one leapfrog step of HMC with :math:`\epsilon = \sqrt{2\eta}` (the Gaussian
proposal densities are the kinetic energies of the initial and final momenta), so the kernel is
:func:`~pyro_vsm.samplers.hmc.hmc_kernel` with ``num_steps=1``; a per-dimension :math:`\eta`
is a diagonal preconditioner.

References:

[1] `Exponential convergence of Langevin distributions and their discrete approximations`,
    Gareth O. Roberts, Richard L. Tweedie (1996)
"""

import torch

from .._checks import positive_int
from ._common import check_z0, step_size_tensor
from .hmc import autograd_potential, hmc_init, hmc_kernel

__all__ = ["mala", "mala_init", "mala_kernel"]


def mala_init(z, energy):
    r"""The MALA state (an :class:`~pyro_vsm.samplers.hmc.HMCState`) at ``z``.

    :param torch.Tensor z: ``(*chains, *event)``.
    :param energy: callable ``z -> E(z)`` with one value per chain.
    :returns: the state, holding :math:`E(z)` and :math:`\nabla E(z)`.
    """
    return hmc_init(z, autograd_potential(energy), momentum=torch.zeros_like(z))


def mala_kernel(state, energy, step_size, generator=None):
    r"""One MALA transition of every chain.

    :param state: the current state (from :func:`mala_init` or a previous transition).
    :param energy: callable ``z -> E(z)`` with one value per chain.
    :param torch.Tensor step_size: :math:`\eta`, a tensor broadcastable to ``z``.
    :param torch.Generator generator: optional source of the noise and uniform draws.
    :returns: ``(state, info)`` as :func:`~pyro_vsm.samplers.hmc.hmc_kernel`.
    """
    return hmc_kernel(
        state, autograd_potential(energy), (2 * step_size).sqrt(), 1, generator=generator
    )


def mala(energy, z0, step_size, num_steps, generator=None):
    r"""``num_steps`` MALA transitions from ``z0``. Proposals with a non-finite energy or gradient
    are rejected.

    :param energy: callable ``z -> E(z)`` with one value per chain (shape a prefix of ``z``'s).
    :param torch.Tensor z0: initial states ``(*chains, *event)``, e.g. ``(n, d)``.
    :param step_size: :math:`\eta > 0`, a float or a tensor broadcastable to ``z0`` (a per-dim
        step is a diagonal preconditioner).
    :param int num_steps: number of transitions.
    :param torch.Generator generator: optional source of the noise (on ``z0``'s device).
    :returns: ``(samples, acceptance_rate)``: the final states (detached, shape of ``z0``) and
        each chain's acceptance probability averaged over the steps (shape ``chains``).
    """
    z = check_z0(z0)
    num_steps = positive_int(num_steps, "num_steps")
    eta = step_size_tensor(step_size, z)
    state = mala_init(z, energy)
    accept_sum = torch.zeros_like(state.potential)
    for _ in range(num_steps):
        state, info = mala_kernel(state, energy, eta, generator)
        accept_sum = accept_sum + info.accept_prob
    return state.position.detach(), accept_sum / num_steps
