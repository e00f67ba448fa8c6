r"""Built-in data sets (no downloads)."""

from .digits import load_digits
from .files import image_shape, load_dataset
from .libi import LIBI_DATASETS, LiBIData, cubic_jte, gaussian, linear_jte, mobius, mobius_transform
from .linear_gaussian import LinearGaussian
from .mvl import MVL_DATASETS_2D, mvl_log_prob
from .potentials import POTENTIALS, make_potential, potential_log_partition
from .sphere import SPHERE_TARGETS, make_sphere, sphere_log_prob, sphere_target
from .synthetic import DATASETS_2D, make_2d

__all__ = [
    "DATASETS_2D",
    "LIBI_DATASETS",
    "LiBIData",
    "LinearGaussian",
    "MVL_DATASETS_2D",
    "POTENTIALS",
    "SPHERE_TARGETS",
    "cubic_jte",
    "gaussian",
    "image_shape",
    "linear_jte",
    "load_dataset",
    "load_digits",
    "make_2d",
    "make_potential",
    "make_sphere",
    "mobius",
    "mobius_transform",
    "mvl_log_prob",
    "potential_log_partition",
    "sphere_log_prob",
    "sphere_target",
]
