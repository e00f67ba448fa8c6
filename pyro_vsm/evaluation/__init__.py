"""Evaluation of latent-variable models: log-likelihoods, log-partition functions, diagnostics.

* :func:`importance_log_likelihood` and :func:`ais_log_likelihood`: one estimate of
  :math:`\\log p(x_n)` per element of the data plate, with per-point diagnostics;
* :func:`log_partition`: :math:`\\log\\int e^{-E(z)}dz` of an energy, exact or by AIS;
* diagnostics: :func:`negative_elbo`, :func:`posterior_fisher_divergence`,
  :func:`score_matching_loss`, :func:`reconstruction_mse`, :func:`marginal_kl`,
  :func:`elbo_surgery`, :func:`low_posterior_samples`, and the two-sample statistics :func:`mmd`
  and :func:`smooth_knn_statistic`;
* :func:`to_arviz`: export of importance/AIS diagnostics (optional ``[arviz]`` extra).
"""

from .ais import AISOptions, ais_log_likelihood, annealing_schedule, log_partition
from .arviz import to_arviz
from .diagnostics import AISDiagnostics, ImportanceDiagnostics
from .energy_prior import energy_prior_log_likelihood
from .henze_zirkler import henze_zirkler
from .importance import importance_log_likelihood, psis_khat
from .metrics import (
    elbo_surgery,
    low_posterior_samples,
    marginal_kl,
    negative_elbo,
    posterior_fisher_divergence,
    reconstruction_mse,
    score_matching_loss,
)
from .two_sample import mmd, smooth_knn_statistic

__all__ = [
    "AISDiagnostics",
    "AISOptions",
    "ImportanceDiagnostics",
    "ais_log_likelihood",
    "annealing_schedule",
    "elbo_surgery",
    "energy_prior_log_likelihood",
    "henze_zirkler",
    "importance_log_likelihood",
    "log_partition",
    "low_posterior_samples",
    "marginal_kl",
    "mmd",
    "negative_elbo",
    "posterior_fisher_divergence",
    "psis_khat",
    "reconstruction_mse",
    "score_matching_loss",
    "smooth_knn_statistic",
    "to_arviz",
]
