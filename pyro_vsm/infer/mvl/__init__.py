r"""Minimum-velocity learning (Wang et al. 2020): estimators of the score-matching objective by
one step of a sampler; :func:`sphere_mvl` on the sphere."""

from .sphere import sphere_mvl

__all__ = ["sphere_mvl"]
