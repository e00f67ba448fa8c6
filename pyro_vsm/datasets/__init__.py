"""Built-in data sets (no downloads)."""

from .libi import LIBI_DATASETS, LiBIData, cubic_jte, gaussian, linear_jte, mobius, mobius_transform
from .synthetic import DATASETS_2D, make_2d

__all__ = [
    "DATASETS_2D",
    "LIBI_DATASETS",
    "LiBIData",
    "cubic_jte",
    "gaussian",
    "linear_jte",
    "make_2d",
    "mobius",
    "mobius_transform",
]
