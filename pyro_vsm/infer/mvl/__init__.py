r"""Minimum-velocity learning (Wang et al. 2020): estimators of the score-matching objective by
one step of a sampler (Langevin, denoising, CD-1, SVGD, SPOS); :func:`sphere_mvl` on the sphere;
the losses :class:`MVLLoss` (unnormalized models of data) and :class:`MVLPriorLoss` (energy-based
VAE priors) that train energies with them."""

from .estimators import cd1, dsm, langevin_mvl, median_bandwidth, spos_mvl, svgd_mvl
from .loss import ESTIMATORS, MVLLoss, MVLPriorLoss
from .sphere import sphere_mvl

__all__ = [
    "ESTIMATORS",
    "MVLLoss",
    "MVLPriorLoss",
    "cd1",
    "dsm",
    "langevin_mvl",
    "median_bandwidth",
    "spos_mvl",
    "sphere_mvl",
    "svgd_mvl",
]
