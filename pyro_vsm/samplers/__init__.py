"""Batched MCMC samplers."""

from .hmc import BatchedHMC

__all__ = ["BatchedHMC"]
