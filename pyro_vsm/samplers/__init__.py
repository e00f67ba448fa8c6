"""Batched MCMC samplers: HMC with per-chain accept (used by AIS), Langevin/MALA for energies,
block Gibbs and Gibbs–Langevin for GRBMs, Metropolis-adjusted Riemannian Langevin on the sphere."""

from .hmc import BatchedHMC
from .langevin import (
    GibbsLangevinSampler,
    LangevinSampler,
    block_gibbs,
    gibbs_langevin,
    langevin,
    mala,
)
from .riemannian_langevin import (
    RiemannianLangevinInfo,
    RiemannianLangevinSampler,
    RiemannianLangevinState,
    riemannian_langevin,
    riemannian_langevin_init,
    riemannian_langevin_step,
)

__all__ = [
    "BatchedHMC",
    "GibbsLangevinSampler",
    "LangevinSampler",
    "RiemannianLangevinInfo",
    "RiemannianLangevinSampler",
    "RiemannianLangevinState",
    "block_gibbs",
    "gibbs_langevin",
    "langevin",
    "mala",
    "riemannian_langevin",
    "riemannian_langevin_init",
    "riemannian_langevin_step",
]
