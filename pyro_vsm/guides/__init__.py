"""Ready-made amortized guides."""

from .encoder import DiagonalNormalEncoder

__all__ = ["DiagonalNormalEncoder"]
