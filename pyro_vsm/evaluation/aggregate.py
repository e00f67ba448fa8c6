r"""Samples of a model's aggregate posterior and of its prior, as flat ``(n, d)`` tensors for the
sample-based KL estimators.

With the guide :math:`q(z|x)` and the data points :math:`x_1, \dots, x_N` of the data plate, the
aggregate posterior is :math:`q(z) = \frac1N\sum_n q(z|x_n)`; drawing ``num_samples`` latents
from every :math:`q(z|x_n)` gives :math:`N \cdot \texttt{num\_samples}` samples of it. Together
with as many draws from the model's prior they feed
:func:`~pyro_vsm.evaluation.density_ratio_kl` (Rosca et al., 2018, Algorithm 3) and
:func:`~pyro_vsm.evaluation.density_model_kl` (Algorithm 4), to be compared with the Monte Carlo
value of :func:`~pyro_vsm.evaluation.marginal_kl` (Algorithm 2) and the bound
:math:`\mathrm{KL}[q(z)\|p(z)] \ge \texttt{average\_kl} - \log N` of
:func:`~pyro_vsm.evaluation.elbo_surgery`.

References:

[1] `Distribution Matching in Variational Inference`,
    Mihaela Rosca, Balaji Lakshminarayanan, Shakir Mohamed (2018)
"""

from dataclasses import dataclass

import torch

from .._checks import positive_int
from ._tracing import (
    PointFlattener,
    inspect_model,
    per_point_log_density,
    run_vectorized,
)

__all__ = ["AggregatePosteriorSamples", "aggregate_posterior_samples"]


@dataclass
class AggregatePosteriorSamples:
    r"""What :func:`aggregate_posterior_samples` returns.

    :ivar q_samples: draws of the aggregate posterior, shape ``[num_samples * N, d]``: every
        latent site of one data point flattened and concatenated in model order.
    :ivar p_samples: as many prior draws in the same layout.
    :ivar log_p: the prior's log-density at each row of ``q_samples``, shape
        ``[num_samples * N]`` (the ``log_p`` argument of
        :func:`~pyro_vsm.evaluation.density_model_kl`).
    :ivar sites: ``(name, width)`` of each latent site, in column order.
    """

    q_samples: torch.Tensor
    p_samples: torch.Tensor
    log_p: torch.Tensor
    sites: list


def _flat(trace, info):
    r"""``[S * N, d]``: the latents of ``trace``, one row per (sample, data point)."""
    parts, sites = [], []
    for name in info.latents:
        value = trace.nodes[name]["value"]
        flat = PointFlattener(value, info, info.event_dims[name]).flatten(value)
        flat = flat.expand(flat.shape[0], info.num_points, flat.shape[-1])
        parts.append(flat)
        sites.append((name, flat.shape[-1]))
    out = torch.cat(parts, -1)
    return out.reshape(-1, out.shape[-1]), sites


def aggregate_posterior_samples(
    model, guide, *args, num_samples=1, max_plate_nesting=None, data_plate=None, **kwargs
):
    r"""Draws of the aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)` over the data plate
    and of the model's prior, flattened to ``(num_samples * N, d)``.

    The guide is run ``num_samples`` times (vectorized) on the given data; the model replayed on
    its latents gives :math:`\log p(z)` at each draw, and the model run on its own gives the prior
    draws (one per data point and sample, which assumes the prior is the same for every data
    point, as :func:`~pyro_vsm.evaluation.low_posterior_samples` does). Every latent must lie in
    the data plate.

    :param model: a Pyro model with its latents in the data plate.
    :param guide: its guide.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: draws from every :math:`q(z|x_n)` (and prior draws per data point).
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :returns: an :class:`AggregatePosteriorSamples`.
    """
    num_samples = positive_int(num_samples, "num_samples")
    with torch.no_grad():
        info = inspect_model(
            model, guide, args, kwargs, max_plate_nesting, data_plate, "aggregate_posterior_samples"
        )
        if not info.latents:
            raise ValueError("aggregate_posterior_samples: the model has no latent sites")
        gtr = run_vectorized(guide, num_samples, info, args, kwargs)
        mtr = run_vectorized(model, num_samples, info, args, kwargs, replay_trace=gtr)
        prior = run_vectorized(model, num_samples, info, args, kwargs)
        q_samples, sites = _flat(gtr, info)
        p_samples, _ = _flat(prior, info)
        log_p = per_point_log_density(mtr, info.latents, info)
        log_p = log_p.expand(num_samples, info.num_points).reshape(-1)
    return AggregatePosteriorSamples(q_samples, p_samples, log_p, sites)
