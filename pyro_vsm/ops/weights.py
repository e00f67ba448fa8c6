r"""Averages of importance weights: log-mean-exp, effective sample size, standard error.

Importance sampling and AIS both average weights :math:`w_s` per data point,
:math:`\hat p = \frac1S\sum_s w_s`, and report :math:`\log\hat p`; these work on the log weights.
"""

import math

import torch

__all__ = ["effective_sample_size", "log_mean_exp", "log_mean_stderr"]


def log_mean_exp(log_w, dim=0):
    r""":math:`\log\frac1S\sum_s e^{\ell_s}` along ``dim``, computed stably.

    :param torch.Tensor log_w: log weights.
    :param int dim: the sample dimension.
    """
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def effective_sample_size(log_w, dim=0):
    r"""Kish's effective sample size :math:`(\sum_s w_s)^2 / \sum_s w_s^2` along ``dim``.

    :param torch.Tensor log_w: log weights.
    :param int dim: the sample dimension.
    """
    return torch.exp(2 * torch.logsumexp(log_w, dim) - torch.logsumexp(2 * log_w, dim))


def log_mean_stderr(log_w, dim=0):
    r"""Delta-method standard error of :math:`\log\frac1S\sum_s w_s` along ``dim``.

    :math:`\operatorname{se}(\log\bar w) \approx \operatorname{sd}(w) / (\sqrt S\,\bar w)`,
    computed from weights normalised by their maximum so that it never overflows.

    :param torch.Tensor log_w: log weights.
    :param int dim: the sample dimension.
    """
    s = log_w.shape[dim]
    if s < 2:
        return torch.full_like(log_w.select(dim, 0), float("nan"))
    w = torch.exp(log_w - log_w.amax(dim, keepdim=True))
    return w.std(dim) / (math.sqrt(s) * w.mean(dim))
