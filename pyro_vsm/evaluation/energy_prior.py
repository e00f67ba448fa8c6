r"""Log-likelihoods of models with energy-based (unnormalized) priors.

For a model whose latent prior is :math:`e^{-E(z)}` without its normaliser (an
:class:`~pyro_vsm.distributions.EnergyDistribution`), importance sampling or AIS on the model as
it is estimate :math:`\log\tilde p(x) = \log\int p(x|z)e^{-E(z)}dz = \log p(x) + \log Z`.
:func:`energy_prior_log_likelihood` subtracts :math:`\log Z` (per energy site and per latent
element of a data point).
"""

import inspect

import torch
from pyro import poutine

from ..ops.sites import latent_sites, unwrap_energy_distribution
from .ais import ais_log_likelihood, log_partition
from .importance import importance_log_likelihood

__all__ = ["energy_prior_log_likelihood"]

METHODS = ("importance", "ais")


def _energy_sites(model, guide, args, kwargs):
    with poutine.block(), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    sites = {}
    for name, site in latent_sites(model_trace):
        ed = unwrap_energy_distribution(site["fn"])
        if ed is not None:
            sites[name] = (site, ed)
    if not sites:
        raise ValueError(
            "energy_prior_log_likelihood: the model has no latent site with an unnormalized "
            "prior (EnergyDistribution); use importance_log_likelihood for normalised models"
        )
    return sites


def _site_log_z(name, ed, log_z_method, log_partition_kwargs):
    if ed.base is None:
        target, event_shape = ed.energy, ed.event_shape
    else:  # the potential E(z) - log b(z) has no exact normaliser here
        if log_z_method == "exact":
            raise ValueError(
                f"energy_prior_log_likelihood: site '{name}' has a base distribution; no exact "
                "log Z: use log_z_method='ais' or pass log_z"
            )
        target, event_shape = ed.potential, ed.event_shape
    with torch.no_grad():
        value = log_partition(
            target, event_shape=event_shape, method=log_z_method, **log_partition_kwargs
        )
    return value.detach()


def energy_prior_log_likelihood(
    model,
    guide,
    *args,
    method="importance",
    log_z=None,
    log_z_method="auto",
    log_partition_kwargs=None,
    num_samples=1000,
    return_log_z=False,
    **kwargs,
):
    r"""Per-data-point estimate of :math:`\log p(x_n)` for a model with an energy-based prior.

    .. math::

        \log \hat p(x_n) = \log\hat{\tilde p}(x_n) - \sum_{\text{energy sites}}
            m_{\text{site}} \log \hat Z_{\text{site}},

    where :math:`\log\hat{\tilde p}(x_n)` is :func:`~pyro_vsm.evaluation.importance_log_likelihood`
    (``method="importance"``, ``num_samples`` guide samples) or
    :func:`~pyro_vsm.evaluation.ais_log_likelihood` (``method="ais"``, started from the guide) of
    the model with its unnormalized prior, and :math:`m_{\text{site}}` is the number of latent
    elements the site has per data point (1 for ``z`` in the data plate).

    :math:`\log Z` of each site comes from ``log_z`` when given, else from
    :func:`~pyro_vsm.evaluation.log_partition`: exact where the energy provides
    ``log_partition()`` (a :class:`~pyro_vsm.distributions.GRBMEnergy` with few hidden units),
    otherwise AIS.

    .. note:: Both parts are estimates. The importance/AIS estimate of :math:`\log\tilde p(x)` is
       a stochastic lower bound, and an AIS estimate of :math:`\log Z` is a stochastic lower bound
       too, which makes :math:`-\log\hat Z` and so the log-likelihood **optimistic** (biased up)
       when :math:`\log Z` is estimated. Report which :math:`\log Z` was used
       (``return_log_z=True``) and prefer exact values (or a long AIS run, whose diagnostics
       ``log_partition(..., return_diagnostics=True)`` gives).

    :param model: a Pyro model whose latent prior site(s) are ``EnergyDistribution`` s.
    :param guide: its guide (the proposal of importance sampling / the start of AIS).
    :param args: arguments of ``model`` and ``guide``.
    :param str method: ``"importance"`` or ``"ais"``.
    :param log_z: a number or tensor (for every energy site), a dict ``{site: value}``, or
        ``None`` to compute it.
    :param str log_z_method: ``method`` of :func:`~pyro_vsm.evaluation.log_partition`
        (``"auto"``: exact where available, else AIS; ``"exact"``; ``"ais"``).
    :param dict log_partition_kwargs: further arguments of ``log_partition`` (e.g.
        ``num_chains``, ``num_temperatures``, ``base_scale``).
    :param int num_samples: importance samples per data point (``method="importance"``).
    :param bool return_log_z: also return ``{site: log Z}`` as used.
    :param kwargs: keyword arguments of ``importance_log_likelihood`` /
        ``ais_log_likelihood`` (``num_temperatures``, ``num_chains``, ``proposal_scale``,
        ``return_diagnostics``, ...); the others go to the model and guide.
    :returns: tensor ``[N]``, or ``(estimates, {site: log Z})``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if log_z_method not in ("auto", "exact", "ais"):
        raise ValueError(f"log_z_method must be 'auto', 'exact' or 'ais', got {log_z_method!r}")
    if guide is None:
        raise ValueError("energy_prior_log_likelihood: a guide is needed (prior sampling is MCMC)")
    estimator = importance_log_likelihood if method == "importance" else ais_log_likelihood
    names = {
        p.name
        for p in inspect.signature(estimator).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("model", "guide")
    }
    options = {k: v for k, v in kwargs.items() if k in names}
    model_kwargs = {k: v for k, v in kwargs.items() if k not in names}
    sites = _energy_sites(model, guide, args, model_kwargs)
    if method == "importance":
        options["num_samples"] = num_samples
        estimates = importance_log_likelihood(model, guide, *args, **options, **model_kwargs)
    else:
        estimates = ais_log_likelihood(model, *args, guide=guide, **options, **model_kwargs)
    if isinstance(estimates, tuple):  # return_diagnostics=True
        estimates, diagnostics = estimates
    else:
        diagnostics = None

    if log_z is not None and not isinstance(log_z, dict):
        log_z = {name: log_z for name in sites}
    log_z = dict(log_z or {})
    unknown = sorted(set(log_z) - set(sites))
    if unknown:
        raise ValueError(
            f"energy_prior_log_likelihood: log_z given for {unknown}, which are not energy sites "
            f"(energy sites: {sorted(sites)})"
        )
    num_points = estimates.shape[-1]
    correction = torch.zeros((), dtype=estimates.dtype, device=estimates.device)
    used = {}
    for name, (site, ed) in sites.items():
        if name in log_z:
            value = torch.as_tensor(log_z[name], dtype=estimates.dtype, device=estimates.device)
        else:
            value = _site_log_z(name, ed, log_z_method, dict(log_partition_kwargs or {}))
            value = value.to(dtype=estimates.dtype, device=estimates.device)
        used[name] = value
        elements = site["fn"].batch_shape.numel()
        per_point = elements / num_points if elements % num_points == 0 else None
        if per_point is None:
            raise ValueError(
                f"energy_prior_log_likelihood: site '{name}' has {elements} latent elements, "
                f"not a multiple of the {num_points} data points"
            )
        correction = correction + per_point * value
    result = estimates - correction
    if diagnostics is not None:
        result = (result, diagnostics)
    if return_log_z:
        return (*result, used) if isinstance(result, tuple) else (result, used)
    return result
