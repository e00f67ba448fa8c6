r"""Diagnostics of a trained latent-variable model, per data point where that makes sense.

* :func:`negative_elbo`: :math:`-\mathrm{ELBO}(x) = \mathbb{E}_q[\log q(z|x) - \log p(x, z)]`.
* :func:`posterior_fisher_divergence`:
  :math:`\mathbb{D}_F[q(z|x)\|p(z|x)] = \tfrac12\mathbb{E}_q\lVert\nabla_z\log q(z|x)
  - \nabla_z\log p(x, z)\rVert^2` (Wenliang, 2022, Section 5 "average FD").
* :func:`score_matching_loss`: the held-out score-matching loss (Hyvärinen, 2005)
  :math:`J(x) = \tfrac12\lVert\nabla_x\log p(x)\rVert^2 + \Delta_x\log p(x)`, which equals the
  marginal Fisher divergence to the data distribution up to a constant, through self-normalised
  posterior expectations.
* :func:`reconstruction_mse`: decode from the posterior mean.
* :func:`marginal_kl` and :func:`elbo_surgery`: Rosca, Lakshminarayanan & Mohamed (2018),
  Algorithm 2, and Hoffman & Johnson's (2016) decomposition
  :math:`\mathbb{E}_x\mathrm{KL}[q(z|x)\|p(z)] = \mathrm{KL}[q(z)\|p(z)] + I_q(x; z)`.
* :func:`low_posterior_samples`: Rosca et al. (2018), Algorithm 1.

All of them evaluate under ``torch.no_grad()`` (the score-based ones enable autograd locally) and
reuse the same per-data-point traces.

References:

[1] `On the failure of variational score matching for VAE models`,
    Li K. Wenliang (2022)

[2] `Estimation of Non-Normalized Statistical Models by Score Matching`,
    Aapo Hyvärinen (2005)

[3] `Distribution Matching in Variational Inference`,
    Mihaela Rosca, Balaji Lakshminarayanan, Shakir Mohamed (2018)

[4] `ELBO surgery: yet another way to carve up the variational evidence lower bound`,
    Matthew D. Hoffman, Matthew J. Johnson (2016)
"""

import math

import torch

from .._checks import positive_int
from ..ops.scores import score_and_laplacian
from ..ops.sites import z_scores
from ._tracing import (
    inspect_model,
    per_point,
    per_point_log_density,
    run_vectorized,
)
from .importance import importance_log_weights


def negative_elbo(
    model, guide, *args, num_samples=5, max_plate_nesting=None, data_plate=None, **kwargs
):
    r"""Monte Carlo :math:`-\mathrm{ELBO}` per data point (``num_samples`` draws from the
    guide); shape ``[N]``.

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: draws from the guide per data point.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    """
    num_samples = positive_int(num_samples, "num_samples")
    with torch.no_grad():
        info = inspect_model(
            model, guide, args, kwargs, max_plate_nesting, data_plate, "negative_elbo"
        )
        log_w, _, _ = importance_log_weights(
            model, guide, args, kwargs, num_samples=num_samples, info=info, progress=False
        )
    return -log_w.mean(0)


def _latent_scores(model, guide, info, args, kwargs, num_samples):
    r"""Samples ``z ~ q`` (detached) and returns, per latent site, ``(∇_z log q, ∇_z log p(x,z))``
    together with the site's event dim."""
    if not info.latents:
        raise ValueError("posterior_fisher_divergence: the model has no latent sites")
    with torch.no_grad():
        gtr = run_vectorized(guide, num_samples, info, args, kwargs)
    values = {n: gtr.nodes[n]["value"].detach().requires_grad_(True) for n in info.latents}
    with torch.enable_grad():
        gtr = run_vectorized(guide, num_samples, info, args, kwargs, condition=values)
        mtr = run_vectorized(model, num_samples, info, args, kwargs, condition=values)
        log_q = per_point_log_density(gtr, info.latents, info).sum()
        log_p = per_point_log_density(mtr, info.latents + info.observed, info).sum()
    scores = z_scores(log_q, log_p, values)
    return {n: (gq, gp, info.event_dims[n]) for n, (gq, gp) in scores.items()}


def posterior_fisher_divergence(
    model, guide, *args, num_samples=5, max_plate_nesting=None, data_plate=None, **kwargs
):
    r""":math:`\tfrac12\mathbb{E}_{q(z|x)}\lVert\nabla_z\log q(z|x) - \nabla_z\log p(x,z)
    \rVert^2` per data point, by ``num_samples`` draws from the guide; shape ``[N]``.

    Since :math:`\nabla_z\log p(x, z) = \nabla_z\log p(z|x)`, this is the Fisher divergence
    between the guide and the exact posterior. Latents are differentiated in the space they are
    sampled in (no change of variables).

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: draws from the guide per data point.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    """
    num_samples = positive_int(num_samples, "num_samples")
    info = inspect_model(
        model, guide, args, kwargs, max_plate_nesting, data_plate, "posterior_fisher_divergence"
    )
    total = 0.0
    for gq, gp, event_dim in _latent_scores(model, guide, info, args, kwargs, num_samples).values():
        total = total + per_point(0.5 * (gq - gp).pow(2), info, event_dim=event_dim)
    return total.mean(0).detach()


def score_matching_loss(
    model,
    guide,
    *args,
    num_samples=100,
    laplacian="auto",
    num_projections=1,
    max_plate_nesting=None,
    data_plate=None,
    **kwargs,
):
    r"""Held-out score-matching loss :math:`J(x_n)` of the model's marginal, per data point.

    With :math:`g(x, z) = \nabla_x\log p(x|z)` and posterior expectations
    :math:`\mathbb{E}_{p(z|x)}`,

    .. math::

        \nabla_x\log p(x) = \mathbb{E}[g], \qquad
        \Delta_x\log p(x) = \mathbb{E}[\nabla_x\cdot g] + \mathbb{E}\lVert g\rVert^2
            - \lVert\mathbb{E}[g]\rVert^2,

    so :math:`J = \tfrac12\lVert\nabla_x\log p\rVert^2 + \Delta_x\log p
    = \mathbb{E}[\nabla_x\cdot g] + \mathbb{E}\lVert g\rVert^2 - \tfrac12\lVert\mathbb{E}g
    \rVert^2`. The posterior expectations are self-normalised importance averages with the guide as
    proposal (``num_samples`` draws), so the estimate is consistent, not unbiased; with equal
    weights (an exact posterior as guide) it is unbiased, because :math:`\lVert\mathbb{E}g
    \rVert^2` is estimated by the U-statistic over pairs of distinct samples rather than by the
    square of the mean, whose bias is :math:`\operatorname{tr}\operatorname{Cov}[g]/S`.
    :math:`\mathbb{E}_{\pi}[J]` equals the Fisher divergence between the data distribution
    :math:`\pi` and the model up to a constant independent of the model (Hyvärinen, 2005): lower
    is better. Laplacians use the closed forms of :mod:`pyro_vsm.ops.scores` (Gaussian
    likelihoods), else autograd (``laplacian``, ``num_projections`` as there). Observed sites
    must be continuous and real-valued.

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: draws from the guide per data point.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.ops.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :returns: :math:`J(x_n)`, shape ``[N]``.
    """
    num_samples = positive_int(num_samples, "num_samples")
    info = inspect_model(
        model, guide, args, kwargs, max_plate_nesting, data_plate, "score_matching_loss"
    )
    with torch.no_grad():
        gtr = run_vectorized(guide, num_samples, info, args, kwargs)
        mtr = run_vectorized(model, num_samples, info, args, kwargs, replay_trace=gtr)
        log_lik = per_point_log_density(mtr, info.observed, info)
        log_w = (
            log_lik
            + per_point_log_density(mtr, info.latents, info, like=log_lik)
            - per_point_log_density(gtr, info.latents, info, like=log_lik)
        )
        w = torch.softmax(log_w.expand(num_samples, info.num_points), 0)  # [S, N]
    expected_lap = expected_sq = plugin_sq = diag_sq = 0.0
    for name in info.observed:
        site = mtr.nodes[name]
        fn = site["fn"]
        value = site["value"].expand(fn.batch_shape + fn.event_shape)
        if not value.is_floating_point():
            raise ValueError(f"score_matching_loss: observed site '{name}' is not continuous")
        score, lap = score_and_laplacian(fn, value.detach(), laplacian, num_projections)
        score, lap = score.detach(), lap.detach()
        event_dim = len(fn.event_shape)
        expected_lap = expected_lap + (w * per_point(lap, info)).sum(0)
        expected_sq = expected_sq + (w * per_point(score.pow(2), info, event_dim)).sum(0)
        # ‖Σ_s w_s g_s‖² per point (weights broadcast to the site's layout)
        ndim = info.max_plate_nesting + 1 + event_dim
        g = score.reshape((1,) * (ndim - score.dim()) + score.shape)
        mean_g = (_broadcast_point_weights(w, info, g) * g).sum(0, keepdim=True)
        plugin_sq = plugin_sq + per_point(mean_g.pow(2), info, event_dim)[0]
        diag_sq = diag_sq + (w.pow(2) * per_point(score.pow(2), info, event_dim)).sum(0)
    # ‖E g‖² without the plug-in bias: Σ_{s≠t} w_s w_t g_s·g_t / (1 - Σ_s w_s²), the
    # U-statistic for equal weights; the plug-in value where one weight carries everything
    w2 = w.pow(2).sum(0)
    denom = 1 - w2
    ok = denom > 1e-12
    mean_sq = torch.where(ok, (plugin_sq - diag_sq) / torch.where(ok, denom, 1.0), plugin_sq)
    return expected_lap + expected_sq - 0.5 * mean_sq


def _broadcast_point_weights(w, info, like):
    r"""Puts ``[S, N]`` weights in the layout of a site tensor ``like`` (sample dim first)."""
    shape = [1] * like.dim()
    shape[0] = w.shape[0]
    if info.data_dim is not None:
        axis = info.max_plate_nesting + 1 + info.data_dim
        shape[axis] = w.shape[1]
        return w.reshape(shape)
    return w[:, 0].reshape(shape)


def reconstruction_mse(model, guide, *args, max_plate_nesting=None, data_plate=None, **kwargs):
    r"""Mean squared error per data point of the model's mean observation when the latents are set
    to the guide's means ("encode, decode from the mean of q"; Wenliang, 2022, Appendix B.2):
    averaged over the elements of every observed site of the point. Shape ``[N]``.

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    """
    info = inspect_model(
        model, guide, args, kwargs, max_plate_nesting, data_plate, "reconstruction_mse"
    )
    with torch.no_grad():
        gtr = run_vectorized(guide, 1, info, args, kwargs)
        means = {}
        for name in info.latents:
            fn = gtr.nodes[name]["fn"]
            try:
                means[name] = fn.mean
            except NotImplementedError as e:
                raise ValueError(
                    f"reconstruction_mse: the guide distribution at site '{name}' "
                    f"({type(fn).__name__}) has no mean"
                ) from e
        mtr = run_vectorized(model, 1, info, args, kwargs, condition=means)
        sq, count = 0.0, 0
        for name in info.observed:
            site = mtr.nodes[name]
            fn = site["fn"]
            value = site["value"].expand(fn.batch_shape + fn.event_shape)
            err = (fn.mean - value).pow(2)
            ones = torch.ones_like(err)
            event_dim = len(fn.event_shape)
            sq = sq + per_point(err, info, event_dim)
            count = count + per_point(ones, info, event_dim)
    return (sq / count)[0]


def _aggregate_log_q(guide_trace, values, info, chunk_size):
    r""":math:`\log q(z) = \log\frac1N\sum_m q(z|x_m)` at every ``values`` point.

    ``values`` are latents in the layout of a run with an evaluation plate of size ``S`` (shape
    ``[S, ..., N, ..., event]``), ``guide_trace`` a run with evaluation plate of size 1 that gives
    each point's guide distribution. Returns ``[S, N]``. Costs ``S·N²`` density evaluations,
    ``chunk_size`` query points at a time.
    """
    if info.data_dim is None:
        raise ValueError("the aggregate posterior needs a data plate with several data points")
    nb = info.max_plate_nesting + 1
    axis = nb + info.data_dim
    n = info.num_points
    out = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        total = 0.0
        for name in info.latents:
            fn = guide_trace.nodes[name]["fn"]
            event_dim = info.event_dims[name]
            z = values[name]
            z = z.reshape((1,) * (nb + event_dim - z.dim()) + z.shape)
            # query points to a new leading dim, broadcast over the guide's data dim
            zq = z.narrow(axis, start, stop - start).movedim(axis, 0).unsqueeze(axis + 1)
            lp = fn.log_prob(zq)  # [n_q, S, ..., N_m, ...]
            lp = lp.reshape(lp.shape[:2] + (1,) * (nb + 1 - lp.dim()) + lp.shape[2:])
            keep = (0, 1, axis + 1)
            others = tuple(d for d in range(lp.dim()) if d not in keep)
            if others:
                lp = lp.sum(others, keepdim=True)
            total = total + lp.reshape(lp.shape[0], lp.shape[1], lp.shape[axis + 1])
        out.append(torch.logsumexp(total, -1) - math.log(n))  # [n_q, S]
    return torch.cat(out, 0).transpose(0, 1)


def elbo_surgery(
    model,
    guide,
    *args,
    num_samples=10,
    chunk_size=64,
    max_plate_nesting=None,
    data_plate=None,
    **kwargs,
):
    r"""ELBO surgery (Hoffman & Johnson, 2016) on the given data set.

    With the aggregate posterior :math:`q(z) = \frac1N\sum_n q(z|x_n)` over the ``N`` points of
    the data plate and :math:`z_{n,s}\sim q(z|x_n)`:

    .. math::

        \underbrace{\frac1N\sum_n\mathrm{KL}[q(z|x_n)\|p(z)]}_{\texttt{average\_kl}}
        = \underbrace{\mathrm{KL}[q(z)\|p(z)]}_{\texttt{marginal\_kl}}
        + \underbrace{\mathbb{E}\big[\log q(z|x_n) - \log q(z)\big]}_{
            \texttt{mutual\_information}}

    All three are Monte Carlo averages over the same ``N × num_samples`` draws, so the identity
    holds exactly for the returned values; the mutual information estimate is at most
    :math:`\log N`. ``log q(z)`` is evaluated against every data point (Rosca et al., 2018,
    Algorithm 2), ``chunk_size`` query points at a time. The prior :math:`p(z)` is the model's
    latent density at the sampled point's own position in the data plate.

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: draws from the guide per data point.
    :param int chunk_size: query points evaluated against every data point at a time.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :returns: dict with scalar tensors ``average_kl``, ``marginal_kl``, ``mutual_information``
        and ``stderr_marginal_kl`` (standard error of the Monte Carlo mean).
    """
    num_samples = positive_int(num_samples, "num_samples")
    chunk_size = positive_int(chunk_size, "chunk_size")
    with torch.no_grad():
        info = inspect_model(
            model, guide, args, kwargs, max_plate_nesting, data_plate, "elbo_surgery"
        )
        gtr = run_vectorized(guide, num_samples, info, args, kwargs)
        mtr = run_vectorized(model, num_samples, info, args, kwargs, replay_trace=gtr)
        values = {n: gtr.nodes[n]["value"] for n in info.latents}
        log_q_cond = per_point_log_density(gtr, info.latents, info)
        log_p = per_point_log_density(mtr, info.latents, info)
        one = run_vectorized(guide, 1, info, args, kwargs)
        log_q_agg = _aggregate_log_q(one, values, info, chunk_size)
        marginal_terms = log_q_agg - log_p
        count = marginal_terms.numel()
        return {
            "average_kl": (log_q_cond - log_p).mean(),
            "marginal_kl": marginal_terms.mean(),
            "mutual_information": (log_q_cond - log_q_agg).mean(),
            "stderr_marginal_kl": marginal_terms.std() / math.sqrt(count),
        }


def marginal_kl(
    model,
    guide,
    *args,
    num_samples=10,
    chunk_size=64,
    max_plate_nesting=None,
    data_plate=None,
    **kwargs,
):
    r""":math:`\mathrm{KL}[q(z)\|p(z)]` of the aggregate posterior over the data plate (Rosca et
    al., 2018, Algorithm 2); a scalar tensor. See :func:`elbo_surgery`.

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_samples: draws from the guide per data point.
    :param int chunk_size: query points evaluated against every data point at a time.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    """
    return elbo_surgery(
        model,
        guide,
        *args,
        num_samples=num_samples,
        chunk_size=chunk_size,
        max_plate_nesting=max_plate_nesting,
        data_plate=data_plate,
        **kwargs,
    )["marginal_kl"]


def low_posterior_samples(
    model,
    guide,
    *args,
    num_prior_samples=1000,
    num_keep=10,
    chunk_size=64,
    max_plate_nesting=None,
    data_plate=None,
    **kwargs,
):
    r"""Prior draws that the aggregate posterior covers least (Rosca et al., 2018, Algorithm 1).

    Draws at least ``num_prior_samples`` latents from the model's prior (one per data point per
    vectorized run, which assumes the prior is the same for every data point), evaluates
    :math:`\log q(z) = \log\frac1N\sum_n q(z|x_n)` for each, and keeps the ``num_keep`` with
    the lowest value. Decode them with the model's decoder to see the "low posterior samples".

    :param model: a Pyro model with observed sites inside a data plate.
    :param guide: its guide; every model latent must have a guide site.
    :param args: positional arguments of ``model`` and ``guide``.
    :param int num_prior_samples: the least number of prior draws.
    :param int num_keep: the number of draws returned.
    :param int chunk_size: query points evaluated against every data point at a time.
    :param int max_plate_nesting: as for Pyro's ELBOs; by default read from one run.
    :param str data_plate: the plate whose elements are the data points; by default the
        outermost plate enclosing every observed site.
    :param kwargs: keyword arguments of ``model`` and ``guide``.
    :returns: ``(latents, log_qz)``: a dict site → tensor ``[num_keep, *point_shape]`` (the
        latent of one data point) and the ``[num_keep]`` values of :math:`\log q(z)`, ascending.
    """
    num_prior_samples = positive_int(num_prior_samples, "num_prior_samples")
    num_keep = positive_int(num_keep, "num_keep")
    with torch.no_grad():
        info = inspect_model(
            model, guide, args, kwargs, max_plate_nesting, data_plate, "low_posterior_samples"
        )
        runs = max(1, math.ceil(num_prior_samples / info.num_points))
        prior = run_vectorized(model, runs, info, args, kwargs)
        values = {n: prior.nodes[n]["value"] for n in info.latents}
        one = run_vectorized(guide, 1, info, args, kwargs)
        log_qz = _aggregate_log_q(one, values, info, chunk_size).reshape(-1)  # [runs * N]
        num_keep = min(num_keep, log_qz.numel())
        order = torch.argsort(log_qz)[:num_keep]
        latents = {}
        nb = info.max_plate_nesting + 1
        for name, z in values.items():
            event_dim = info.event_dims[name]
            z = z.reshape((1,) * (nb + event_dim - z.dim()) + z.shape)
            z = z.movedim(nb + info.data_dim, 1)
            z = z.expand((runs, info.num_points) + z.shape[2:])
            z = z.reshape((runs * info.num_points,) + z.shape[2:])
            # drop the size-1 batch dims of the other plates
            point = z[order]
            squeeze = tuple(d for d in range(1, nb - 1) if point.shape[d] == 1)
            latents[name] = point.squeeze(squeeze) if squeeze else point
        return latents, log_qz[order]
