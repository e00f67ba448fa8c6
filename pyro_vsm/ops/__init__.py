r"""Pure tensor functions that training and evaluation both use.

Scores and Laplacians of observation densities (:mod:`~pyro_vsm.ops.scores`), sliced score
matching (:mod:`~pyro_vsm.ops.score_matching`), the Henze--Zirkler normality statistic
(:mod:`~pyro_vsm.ops.henze_zirkler`), two-sample statistics (:mod:`~pyro_vsm.ops.two_sample`,
:mod:`~pyro_vsm.ops.smooth_knn`), averages of importance weights (:mod:`~pyro_vsm.ops.weights`)
and the site utilities of traces (:mod:`~pyro_vsm.ops.sites`). Neither :mod:`pyro_vsm.infer` nor
:mod:`pyro_vsm.evaluation` is imported here: both build on this package.
"""

from .henze_zirkler import henze_zirkler
from .score_matching import sliced_score_matching
from .scores import score_and_laplacian
from .smooth_knn import smooth_knn_marginals, smooth_knn_statistic
from .two_sample import mmd
from .weights import effective_sample_size, log_mean_exp, log_mean_stderr

__all__ = [
    "effective_sample_size",
    "henze_zirkler",
    "log_mean_exp",
    "log_mean_stderr",
    "mmd",
    "score_and_laplacian",
    "sliced_score_matching",
    "smooth_knn_marginals",
    "smooth_knn_statistic",
]
