r"""Pure tensor functions shared by training and evaluation (no Pyro state, no host syncs):
sphere geometry (:mod:`pyro_vsm.ops.sphere`) and log-space modified Bessel functions
(:mod:`pyro_vsm.ops.bessel`)."""

from .bessel import bessel_iv_ratio, log_bessel_iv, log_bessel_iv_div_pow
from .sphere import (
    check_on_sphere,
    exp_map,
    log_map,
    log_sphere_area,
    normalize_retraction,
    stereographic_chart,
    stereographic_inverse,
    stereographic_log_det_metric,
    stereographic_tangent,
    tangent_projection,
)

__all__ = [
    "bessel_iv_ratio",
    "check_on_sphere",
    "exp_map",
    "log_bessel_iv",
    "log_bessel_iv_div_pow",
    "log_map",
    "log_sphere_area",
    "normalize_retraction",
    "stereographic_chart",
    "stereographic_inverse",
    "stereographic_log_det_metric",
    "stereographic_tangent",
    "tangent_projection",
]
