r"""Pure tensor functions that training and evaluation both use.

Scores and Laplacians of observation densities (:mod:`~pyro_vsm.ops.scores`), sliced score
matching (:mod:`~pyro_vsm.ops.score_matching`), the Henze--Zirkler normality statistic
(:mod:`~pyro_vsm.ops.henze_zirkler`), two-sample statistics (:mod:`~pyro_vsm.ops.two_sample`,
:mod:`~pyro_vsm.ops.smooth_knn`), averages of importance weights (:mod:`~pyro_vsm.ops.weights`),
the site utilities of traces (:mod:`~pyro_vsm.ops.sites`), sphere geometry
(:mod:`~pyro_vsm.ops.sphere`) and log-space modified Bessel functions
(:mod:`~pyro_vsm.ops.bessel`). Neither :mod:`pyro_vsm.infer` nor :mod:`pyro_vsm.evaluation` is
imported here: both build on this package.
"""

from .bessel import bessel_iv_ratio, log_bessel_iv, log_bessel_iv_div_pow
from .henze_zirkler import henze_zirkler
from .score_matching import sliced_score_matching
from .scores import score_and_laplacian
from .smooth_knn import smooth_knn_marginals, smooth_knn_statistic
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
from .two_sample import mmd
from .weights import effective_sample_size, log_mean_exp, log_mean_stderr

__all__ = [
    "bessel_iv_ratio",
    "check_on_sphere",
    "effective_sample_size",
    "exp_map",
    "henze_zirkler",
    "log_bessel_iv",
    "log_bessel_iv_div_pow",
    "log_map",
    "log_mean_exp",
    "log_mean_stderr",
    "log_sphere_area",
    "mmd",
    "normalize_retraction",
    "score_and_laplacian",
    "sliced_score_matching",
    "smooth_knn_marginals",
    "smooth_knn_statistic",
    "stereographic_chart",
    "stereographic_inverse",
    "stereographic_log_det_metric",
    "stereographic_tangent",
    "tangent_projection",
]
