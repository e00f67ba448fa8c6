r"""Batched MCMC kernels in the shape of BlackJAX: a small state, one pure transition function.

* :mod:`~pyro_vsm.samplers.hmc`: HMC (:func:`hmc_init`, :func:`hmc_kernel`) with a Metropolis
  decision per chain and optional partial momentum refresh; :class:`BatchedHMC` wraps it with a
  step size adapted per target;
* :mod:`~pyro_vsm.samplers.langevin` and :mod:`~pyro_vsm.samplers.mala`: unadjusted and
  Metropolis-adjusted Langevin for energies, and :class:`LangevinSampler`;
* :mod:`~pyro_vsm.samplers.gibbs` and :mod:`~pyro_vsm.samplers.gibbs_langevin`: block Gibbs and
  Gibbs–Langevin for GRBMs, and :class:`GibbsLangevinSampler`;
* :mod:`~pyro_vsm.samplers.riemannian_langevin`: Metropolis-adjusted Riemannian Langevin on the
  sphere, and :class:`RiemannianLangevinSampler`;
* :func:`metropolis_accept` and :func:`select`: the one Metropolis decision every adjusted kernel
  uses; :class:`StepSizeAdaptation`: Robbins–Monro step-size adaptation;
* :mod:`~pyro_vsm.samplers.annealing`: annealed importance sampling (schedules, the AIS loop with
  an explicit state, :class:`AISOptions`).
"""

from .adaptation import StepSizeAdaptation
from .annealing import (
    AISOptions,
    AISState,
    annealing_schedule,
    run_ais,
    thermodynamic_schedule,
)
from .gibbs import block_gibbs, block_gibbs_kernel
from .gibbs_langevin import (
    GibbsLangevinSampler,
    GibbsLangevinState,
    gibbs_langevin,
    gibbs_langevin_init,
    gibbs_langevin_kernel,
)
from .hmc import BatchedHMC, HMCInfo, HMCState, autograd_potential, hmc_init, hmc_kernel
from .langevin import LangevinSampler, langevin, langevin_kernel
from .mala import mala, mala_init, mala_kernel
from .metropolis import metropolis_accept, select
from .riemannian_langevin import (
    RiemannianLangevinInfo,
    RiemannianLangevinSampler,
    RiemannianLangevinState,
    riemannian_langevin,
    riemannian_langevin_init,
    riemannian_langevin_step,
)

__all__ = [
    "AISOptions",
    "AISState",
    "BatchedHMC",
    "GibbsLangevinSampler",
    "GibbsLangevinState",
    "HMCInfo",
    "HMCState",
    "LangevinSampler",
    "RiemannianLangevinInfo",
    "RiemannianLangevinSampler",
    "RiemannianLangevinState",
    "StepSizeAdaptation",
    "annealing_schedule",
    "autograd_potential",
    "block_gibbs",
    "block_gibbs_kernel",
    "gibbs_langevin",
    "gibbs_langevin_init",
    "gibbs_langevin_kernel",
    "hmc_init",
    "hmc_kernel",
    "langevin",
    "langevin_kernel",
    "mala",
    "mala_init",
    "mala_kernel",
    "metropolis_accept",
    "riemannian_langevin",
    "riemannian_langevin_init",
    "riemannian_langevin_step",
    "run_ais",
    "select",
    "thermodynamic_schedule",
]
