r"""Evaluation of latent-variable models: log-likelihoods, log-partition functions, diagnostics.

* :func:`importance_log_likelihood` and :func:`ais_log_likelihood`: one estimate of
  :math:`\log p(x_n)` per element of the data plate, with per-point diagnostics;
* :func:`log_partition`: :math:`\log\int e^{-E(z)}dz` of an energy, exact or by AIS;
* :func:`sphere_augmented`: latents on the sphere lifted exactly to their ambient space (AIS
  uses it for hyperspherical latents);
* diagnostics: :func:`negative_elbo`, :func:`posterior_fisher_divergence`,
  :func:`score_matching_loss`, :func:`reconstruction_mse`, :func:`marginal_kl`,
  :func:`elbo_surgery`, :func:`low_posterior_samples`, and the two-sample statistics :func:`mmd`
  and :func:`smooth_knn_statistic`;
* KL divergences from samples (Rosca et al., 2018, Algorithms 3 and 4): :func:`density_ratio_kl`
  (a classifier's density ratio) and :func:`density_model_kl` (a Gaussian mixture or a flow), fed
  by :func:`aggregate_posterior_samples`;
* :func:`to_arviz`: export of importance/AIS diagnostics (optional ``[arviz]`` extra).
"""

from ..ops import henze_zirkler, mmd, smooth_knn_statistic
from .aggregate import AggregatePosteriorSamples, aggregate_posterior_samples
from .ais import AISOptions, ais_log_likelihood, annealing_schedule, log_partition
from .arviz import to_arviz
from .density_model import DensityModelDiagnostics, density_model_kl
from .density_ratio import DensityRatioDiagnostics, density_ratio_kl
from .diagnostics import AISDiagnostics, ImportanceDiagnostics
from .energy_prior import energy_prior_log_likelihood
from .importance import importance_log_likelihood, log_likelihood_validation, psis_khat
from .metrics import (
    elbo_surgery,
    low_posterior_samples,
    marginal_kl,
    negative_elbo,
    posterior_fisher_divergence,
    reconstruction_mse,
    score_matching_loss,
)
from .sphere import sphere_augmented

__all__ = [
    "AISDiagnostics",
    "AISOptions",
    "AggregatePosteriorSamples",
    "DensityModelDiagnostics",
    "DensityRatioDiagnostics",
    "ImportanceDiagnostics",
    "aggregate_posterior_samples",
    "ais_log_likelihood",
    "annealing_schedule",
    "density_model_kl",
    "density_ratio_kl",
    "elbo_surgery",
    "energy_prior_log_likelihood",
    "henze_zirkler",
    "importance_log_likelihood",
    "log_likelihood_validation",
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
    "sphere_augmented",
    "to_arviz",
]
