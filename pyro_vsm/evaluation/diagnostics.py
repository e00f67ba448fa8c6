r"""Diagnostics returned next to importance-sampling and AIS estimates.

Both estimators average weights :math:`w_s` (importance weights, or AIS chain weights) per data
point: :math:`\hat p = \frac1S\sum_s w_s` and report :math:`\log\hat p`. The diagnostics keep
the log weights themselves so that anything else (ArviZ export, other tail diagnostics) can be
computed from them later.
"""

from dataclasses import dataclass

import torch


@dataclass
class ImportanceDiagnostics:
    r"""Per-data-point diagnostics of :func:`~pyro_vsm.evaluation.importance_log_likelihood`.

    :ivar log_weights: ``log p(x, z_s) - log q(z_s | x)``, shape ``[S, N]``.
    :ivar ess: Kish effective sample size per data point, shape ``[N]`` (between 1 and ``S``).
    :ivar khat: Pareto-smoothed importance sampling shape estimate :math:`\hat k` per data point,
        shape ``[N]``. Above 0.7 the estimate is unreliable [1]; between 0.5 and 0.7 it converges
        slowly.
    :ivar stderr: delta-method standard error of each log-likelihood estimate, shape ``[N]``.
    :ivar data_plate: name of the plate whose elements are the data points (``None`` when the
        observed sites are in no plate and the whole batch is one data point).

    References:

    [1] `Pareto Smoothed Importance Sampling`,
        Aki Vehtari, Andrew Gelman, Jonah Gabry (2015)
    """

    log_weights: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    stderr: torch.Tensor
    data_plate: str | None


@dataclass
class AISDiagnostics:
    r"""Diagnostics of :func:`~pyro_vsm.evaluation.ais_log_likelihood` and
    :func:`~pyro_vsm.evaluation.log_partition`.

    :ivar log_weights: final AIS log weight of every chain, shape ``[C, *batch]`` (``batch`` is
        ``[N]`` for log-likelihoods, ``[]`` for a log-partition function).
    :ivar stderr: standard error of the log estimate across chains (delta method), ``batch`` shape.
    :ivar ess: Kish effective sample size of the chain weights, ``batch`` shape.
    :ivar acceptance_rate: HMC acceptance rate averaged over transitions and chains, ``batch``
        shape.
    :ivar step_size: leapfrog step size at the end of the run (adapted per element of ``batch``).
    :ivar num_temperatures: number of intermediate distributions.
    :ivar data_plate: as in :class:`ImportanceDiagnostics` (``None`` for a log-partition function).
    """

    log_weights: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    acceptance_rate: torch.Tensor
    step_size: torch.Tensor
    num_temperatures: int
    data_plate: str | None
