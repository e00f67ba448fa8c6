r"""Minimum-velocity learning (Wang et al. 2020): estimators of the score-matching objective by
one step of a sampler (Langevin, denoising, CD-1, SVGD, SPOS)."""

from .estimators import cd1, dsm, langevin_mvl, median_bandwidth, spos_mvl, svgd_mvl

__all__ = ["cd1", "dsm", "langevin_mvl", "median_bandwidth", "spos_mvl", "svgd_mvl"]
