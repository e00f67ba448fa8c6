"""Ready-made guides: an amortized diagonal Gaussian encoder and a (non-amortized) Gaussian
mixture for Fisher inference without reparametrisation."""

from .encoder import DiagonalNormalEncoder
from .mixture import GaussianMixtureGuide

__all__ = ["DiagonalNormalEncoder", "GaussianMixtureGuide"]
