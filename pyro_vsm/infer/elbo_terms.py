r"""``Trace_ELBO``'s estimator as tensors, shared by the losses that train groups on an ELBO.

Pyro's :class:`~pyro.infer.Trace_ELBO` reads every site's value back to the host
(``torch_item``); the losses here need the same estimator without host synchronisation (one
finiteness check per step, none in ``differentiable_loss``), so it is written once here.
"""

from dataclasses import dataclass

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer.trace_elbo import _compute_log_r

from .grouped import split_params

__all__ = ["ELBOTerms", "elbo_particle", "elbo_site_terms", "negative_elbo_terms"]


def elbo_particle(model_trace, guide_trace):
    r"""``(ELBO, surrogate ELBO)`` of one particle as tensors.

    The ELBO :math:`\log p(x, z) - \log q(z|x)` summed over sites (with plate scales), detached,
    and the surrogate whose gradient is ``Trace_ELBO``'s estimator: reparametrised sites
    differentiate through the sample, non-reparametrised ones add the score-function term
    with the downstream log-ratio (Rao-Blackwellised along plates).

    :param model_trace: the model's trace (log-probabilities computed).
    :param guide_trace: the guide's trace (score parts computed).
    """
    elbo, surrogate, log_r = 0.0, 0.0, None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            elbo = elbo + site["log_prob_sum"].detach()
            surrogate = surrogate + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] != "sample":
            continue
        _, score_function_term, entropy_term = site["score_parts"]
        elbo = elbo - site["log_prob_sum"].detach()
        if not is_identically_zero(entropy_term):
            surrogate = surrogate - entropy_term.sum()
        if not is_identically_zero(score_function_term):
            if log_r is None:
                log_r = _compute_log_r(model_trace, guide_trace)
            term = log_r.sum_to(site["cond_indep_stack"])
            surrogate = surrogate + (term * score_function_term).sum()
    return elbo, surrogate


def elbo_site_terms(traces, num_particles):
    r"""Per-site terms of the negative ELBO, averaged over particles (for error messages).

    :param traces: ``(model_trace, guide_trace)`` pairs, one per particle.
    :param int num_particles: the number of particles.
    """
    terms = {}
    for model_trace, guide_trace in traces:
        for sign, trace in ((-1.0, model_trace), (1.0, guide_trace)):
            for name, site in trace.nodes.items():
                if site["type"] == "sample":
                    t = sign * site["log_prob_sum"].detach() / num_particles
                    terms[name] = terms.get(name, 0.0) + t
    return terms


@dataclass
class ELBOTerms:
    r"""The negative ELBO of one step over its particles.

    :param torch.Tensor value: the negative ELBO (detached).
    :param torch.Tensor surrogate: the tensor whose gradient is ``Trace_ELBO``'s estimator.
    :param dict model_params: the model group (see
        :func:`~pyro_vsm.infer.grouped.split_params`).
    :param dict guide_params: the guide group.
    :param list traces: the ``(model_trace, guide_trace)`` pairs.
    :param int num_particles: the number of particles.
    """

    value: torch.Tensor
    surrogate: torch.Tensor
    model_params: dict
    guide_params: dict
    traces: list
    num_particles: int

    def sites(self):
        r"""Per-site terms of the value (for error messages)."""
        return elbo_site_terms(self.traces, self.num_particles)


def negative_elbo_terms(loss, model, guide, args, kwargs):
    r"""The negative ELBO of ``model`` and ``guide`` with ``loss``'s particles.

    :param loss: a :class:`~pyro.infer.ELBO` (its particles and ``_get_traces``).
    :param model: the model.
    :param guide: the guide.
    :param tuple args: their positional arguments.
    :param dict kwargs: their keyword arguments.
    :returns: :class:`ELBOTerms`
    """
    traces = list(loss._get_traces(model, guide, args, kwargs))
    s = loss.num_particles
    elbo, surrogate = 0.0, 0.0
    for model_trace, guide_trace in traces:
        value, surr = elbo_particle(model_trace, guide_trace)
        elbo = elbo + value / s
        surrogate = surrogate + surr / s
    if not torch.is_tensor(elbo):
        raise ValueError(f"{type(loss).__name__}: the model and guide have no sample sites")
    model_params, guide_params = split_params(*zip(*traces, strict=True))
    return ELBOTerms(-elbo, -surrogate, model_params, guide_params, traces, s)
