r"""Importance-sampled log-likelihood, one estimate per data point.

.. math::

    \log \hat p(x_n) = \log \frac1S \sum_{s=1}^S
        \frac{p(x_n, z_{n,s})}{r(z_{n,s} \mid x_n)}, \qquad z_{n,s} \sim r(\cdot \mid x_n),

with the guide as proposal :math:`r = q` (or the guide with every scale multiplied by
``proposal_scale``). The estimate is a stochastic lower bound of :math:`\log p(x_n)` (Jensen), it
is exact for any ``S`` when the proposal is the exact posterior, and its reliability is flagged by
the Pareto-smoothed importance sampling shape :math:`\hat k` ([1]; :math:`\hat k > 0.7` means
the estimate is not trustworthy).

References:

[1] `Pareto Smoothed Importance Sampling`,
    Aki Vehtari, Andrew Gelman, Jonah Gabry (2015)
"""

import math
import warnings

import torch
from pyro.ops.stats import fit_generalized_pareto

from .._checks import positive_int
from ..ops.weights import effective_sample_size, log_mean_exp, log_mean_stderr
from ._tracing import (
    inspect_model,
    per_point_log_density,
    progress_bar,
    run_vectorized,
)
from .diagnostics import ImportanceDiagnostics

#: Default bound on the number of tensor elements one chunk of samples may hold (site values and
#: log-densities of one vectorized model + guide run); about 256 MB in float32.
DEFAULT_MAX_ELEMENTS = 2**26


_SQRT2 = math.sqrt(2.0)


def psis_khat(log_weights):
    r"""Pareto :math:`\hat k` of each column of ``log_weights`` (shape ``[S, N]``).

    The generalized-Pareto fit of the largest :math:`M = \min(0.2S, 3\sqrt S)` weights, with
    Pyro's :func:`~pyro.ops.stats.fit_generalized_pareto` (the tail rule of
    :func:`pyro.infer.importance.psis_diagnostic`, applied per data point). Columns with fewer
    than 10 tail weights give ``inf``.

    :param torch.Tensor log_weights: log importance weights, shape ``[S, N]``.
    :returns: :math:`\hat k`, shape ``[N]`` (dtype and device of ``log_weights``).
    """
    lw = log_weights.detach().to("cpu", torch.float64)
    s = lw.shape[0]
    cutoff_index = -int(math.ceil(min(0.2 * s, 3.0 * math.sqrt(s)))) - 1
    out = []
    for column in lw.unbind(-1):
        column = torch.sort(column - column.max())[0]
        if s + cutoff_index < 0:
            out.append(float("inf"))
            continue
        cutoff = max(math.log(1e-15), float(column[cutoff_index]))
        tail = column[column > cutoff]
        if tail.numel() < 10:
            out.append(float("inf"))
            continue
        k, _ = fit_generalized_pareto(tail.exp() - math.exp(cutoff))
        out.append(k)
    return torch.tensor(out, dtype=log_weights.dtype, device=log_weights.device)


def _chunk_size(probe_trace, num_samples, max_elements):
    numel = 0
    for site in probe_trace.nodes.values():
        if site["type"] == "sample" and torch.is_tensor(site["value"]):
            numel += site["value"].numel()
    return max(1, min(num_samples, max_elements // max(numel, 1)))


def importance_log_weights(
    model,
    guide,
    args,
    kwargs,
    *,
    num_samples,
    info,
    proposal_scale=1.0,
    chunk_size=None,
    progress=False,
    desc="importance sampling",
):
    r"""``[S, N]`` log weights ``log p(x_n, z) - log r(z | x_n)`` with ``z ~ r(· | x_n)``.

    Also returns the ``[S, N]`` log-densities ``log p(z)`` of the latents under the model and
    ``log r(z | x)`` under the proposal, which the diagnostics of
    :mod:`~pyro_vsm.evaluation.metrics` reuse.

    :param model: the Pyro model.
    :param guide: its guide (the proposal).
    :param tuple args: positional arguments of ``model`` and ``guide``.
    :param dict kwargs: keyword arguments of ``model`` and ``guide``.
    :param int num_samples: importance samples ``S`` per data point.
    :param info: the model's structure, from ``inspect_model``.
    :param float proposal_scale: multiplies the scale of every guide distribution.
    :param int chunk_size: samples drawn per vectorized run (``None``: chosen from a probe run).
    :param progress: show a progress bar (``None``: only on an interactive terminal).
    :param str desc: the progress bar's label.
    :returns: ``(log_weights, log_prior, log_proposal)``, each of shape ``[S, N]``.
    """
    chunks = []

    def one(c):
        gtr = run_vectorized(guide, c, info, args, kwargs, inflate=proposal_scale)
        mtr = run_vectorized(model, c, info, args, kwargs, replay_trace=gtr)
        log_lik = per_point_log_density(mtr, info.observed, info)
        log_q = per_point_log_density(gtr, info.latents, info, like=log_lik)
        log_prior = per_point_log_density(mtr, info.latents, info, like=log_lik)
        shape = (c, info.num_points)
        return (
            (log_prior + log_lik - log_q).expand(shape),
            log_prior.expand(shape),
            log_q.expand(shape),
            mtr,
        )

    if chunk_size is None:
        first = one(1)
        chunk_size = _chunk_size(first[3], num_samples, DEFAULT_MAX_ELEMENTS)
        chunks.append(first[:3])
        done = 1
    else:
        chunk_size = positive_int(chunk_size, "chunk_size")
        done = 0
    with progress_bar(num_samples, desc, progress) as bar:
        bar.update(done)
        while done < num_samples:
            c = min(chunk_size, num_samples - done)
            chunks.append(one(c)[:3])
            done += c
            bar.update(c)
    return tuple(torch.cat(parts, 0) for parts in zip(*chunks, strict=True))


def importance_log_likelihood(
    model,
    guide,
    *args,
    num_samples=1000,
    proposal_scale=1.0,
    chunk_size=None,
    max_plate_nesting=None,
    data_plate=None,
    return_diagnostics=False,
    progress=None,
    **kwargs,
):
    r"""Per-data-point importance-sampled estimate of :math:`\log p(x_n)` with the guide as
    proposal.

    :param model: a Pyro model with continuous latents and observed sites inside a data plate.
    :param guide: its guide (the proposal); every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: importance samples ``S`` per data point.
    :param float proposal_scale: multiplies the scale of every guide distribution (Normal,
        StudentT, Laplace, Cauchy, MultivariateNormal, LowRankMultivariateNormal, also inside
        ``Independent`` and ``expand``); ``math.sqrt(2)`` doubles the variance as in the LiBI paper.
    :param int chunk_size: samples drawn per vectorized run; by default chosen from one probe run
        so that a chunk holds at most :data:`DEFAULT_MAX_ELEMENTS` site elements.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site. Without one, the whole batch is one point.
    :param bool return_diagnostics: also return
        :class:`~pyro_vsm.evaluation.diagnostics.ImportanceDiagnostics`
        (log weights, ESS, PSIS :math:`\hat k`, standard errors).
    :param progress: show a tqdm bar (``None``: only on an interactive terminal).
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :returns: tensor of shape ``[N]`` (``N`` = size of the data plate, or its subsample), or
        ``(estimates, diagnostics)``.
    """
    num_samples = positive_int(num_samples, "num_samples")
    with torch.no_grad():
        info = inspect_model(
            model, guide, args, kwargs, max_plate_nesting, data_plate, "importance_log_likelihood"
        )
        log_w, _, _ = importance_log_weights(
            model,
            guide,
            args,
            kwargs,
            num_samples=num_samples,
            info=info,
            proposal_scale=proposal_scale,
            chunk_size=chunk_size,
            progress=progress,
        )
        estimates = log_mean_exp(log_w, 0)
    if not return_diagnostics:
        return estimates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        khat = psis_khat(log_w)
    diagnostics = ImportanceDiagnostics(
        log_weights=log_w,
        ess=effective_sample_size(log_w, 0),
        khat=khat,
        stderr=log_mean_stderr(log_w, 0),
        data_plate=info.data_plate,
    )
    return estimates, diagnostics


def log_likelihood_validation(num_samples=1000, proposal_scale=_SQRT2, **options):
    r"""A model-selection score for :class:`~pyro_vsm.LiBILoss` (``validation=``): the mean
    importance-sampled :math:`\frac1N\sum_n \log p(x_n)` of
    :func:`importance_log_likelihood`, by default with the guide inflated to twice its variance
    as in the LiBI paper's evaluation.

    :param int num_samples: importance samples per data point.
    :param float proposal_scale: multiplies the scale of every guide distribution.
    :param options: further keyword arguments of :func:`importance_log_likelihood`
        (``chunk_size``, ``max_plate_nesting``, ``data_plate``).
    :return: a callable ``(model, guide, *args, **kwargs) -> float``.
    """
    num_samples = positive_int(num_samples, "num_samples")

    def score(model, guide, *args, **kwargs):
        log_px = importance_log_likelihood(
            model,
            guide,
            *args,
            num_samples=num_samples,
            proposal_scale=proposal_scale,
            progress=False,
            **options,
            **kwargs,
        )
        return float(log_px.mean())

    return score
