"""Batched MCMC samplers: HMC with per-chain accept (used by AIS), Langevin/MALA for energies,
block Gibbs and Gibbs–Langevin for GRBMs."""

from .hmc import BatchedHMC
from .langevin import (
    GibbsLangevinSampler,
    LangevinSampler,
    block_gibbs,
    gibbs_langevin,
    langevin,
    mala,
)

__all__ = [
    "BatchedHMC",
    "GibbsLangevinSampler",
    "LangevinSampler",
    "block_gibbs",
    "gibbs_langevin",
    "langevin",
    "mala",
]
