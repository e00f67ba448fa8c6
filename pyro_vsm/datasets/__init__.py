"""Built-in data sets (no downloads)."""

from .synthetic import DATASETS_2D, make_2d

__all__ = ["DATASETS_2D", "make_2d"]
