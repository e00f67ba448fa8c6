r"""Minimum-velocity learning (Wang et al. 2020): estimators of the score-matching objective by
one step of a sampler (Langevin, denoising, CD-1, SVGD, SPOS); :func:`sphere_mvl` on the sphere."""

from .estimators import cd1, dsm, langevin_mvl, median_bandwidth, spos_mvl, svgd_mvl
from .sphere import sphere_mvl

__all__ = ["cd1", "dsm", "langevin_mvl", "median_bandwidth", "spos_mvl", "sphere_mvl", "svgd_mvl"]
