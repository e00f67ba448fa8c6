r"""Site utilities shared by the losses and the evaluators: which sites of a trace are latent,
observed, unnormalized (energy priors) or plate subsamples, and the latents' scores."""

import torch
from pyro.poutine.util import site_is_subsample

__all__ = [
    "energy_sites",
    "is_unnormalized",
    "latent_sites",
    "observed_sites",
    "sample_sites",
    "subsample_indices",
    "unwrap_energy_distribution",
    "z_scores",
]


def sample_sites(trace):
    r"""``[(name, site)]`` of the sample sites of ``trace`` that are not plate subsamples.

    :param trace: a Pyro trace.
    """
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def latent_sites(trace):
    r"""``[(name, site)]`` of the latent (unobserved) sample sites of ``trace``, in order.

    :param trace: a Pyro trace.
    """
    return [(n, s) for n, s in sample_sites(trace) if not s["is_observed"]]


def observed_sites(trace):
    r"""``[(name, site)]`` of the observed sample sites of ``trace``, in order.

    :param trace: a Pyro trace.
    """
    return [(n, s) for n, s in sample_sites(trace) if s["is_observed"]]


def subsample_indices(trace):
    r"""``{plate name: indices}`` of the plates of ``trace`` that subsample.

    :param trace: a Pyro trace.
    """
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and site_is_subsample(site)
    }


def z_scores(log_q, log_p, values, create_graph=False):
    r"""The latents' scores :math:`\nabla_z\log q` and :math:`\nabla_z\log p` at ``values``.

    :param torch.Tensor log_q: a scalar log-density of the guide, differentiable in ``values``.
    :param torch.Tensor log_p: a scalar log-density of the model, differentiable in ``values``.
    :param dict values: ``{name: tensor}`` of the latents (leaves or reparametrised samples).
    :param bool create_graph: keep the scores differentiable.
    :returns: ``{name: (score_q, score_p)}``; a latent a density does not depend on gets zeros.
    """
    names = list(values)
    inputs = [values[n] for n in names]
    with torch.enable_grad():
        gq = torch.autograd.grad(log_q, inputs, create_graph=create_graph, allow_unused=True)
        gp = torch.autograd.grad(log_p, inputs, create_graph=create_graph, allow_unused=True)
    return {
        n: (
            torch.zeros_like(v) if a is None else a,
            torch.zeros_like(v) if b is None else b,
        )
        for n, v, a, b in zip(names, inputs, gq, gp, strict=True)
    }


def is_unnormalized(fn):
    r"""Whether a distribution (or one it wraps: ``Independent``, ``expand``, ``mask``) declares
    ``is_normalized = False``, as :class:`~pyro_vsm.distributions.EnergyDistribution` does.

    :param fn: a distribution.
    """
    return unwrap_energy_distribution(fn) is not None


def unwrap_energy_distribution(fn):
    r"""The unnormalized distribution ``fn`` is or wraps (through ``Independent``, ``expand``,
    ``mask``), or ``None``.

    :param fn: a distribution.
    """
    while fn is not None:
        if getattr(fn, "is_normalized", True) is False:
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


def energy_sites(model_trace, caller="energy-prior loss"):
    r"""The latent sample sites of ``model_trace`` whose prior is unnormalized, as
    ``[(name, site)]``.

    :param model_trace: a trace of the model.
    :param str caller: the name used in error messages.
    :raises ValueError: when there is none (the loss needs an energy-based prior), or when an
        observed site is unnormalized (its missing normaliser would bias the decoder).
    """
    found, latents = [], []
    for name, site in sample_sites(model_trace):
        unnormalized = is_unnormalized(site["fn"])
        if site["is_observed"]:
            if unnormalized:
                raise ValueError(
                    f"{caller}: observed site '{name}' has an unnormalized distribution "
                    f"({type(site['fn']).__name__}); only latent prior sites may be unnormalized"
                )
            continue
        latents.append(name)
        if unnormalized:
            found.append((name, site))
    if not found:
        listed = ", ".join(repr(n) for n in latents) or "none"
        raise ValueError(
            f"{caller}: the model has no latent sample site with an energy-based (unnormalized) "
            f"prior, i.e. an EnergyDistribution with is_normalized=False (latent sites: "
            f"{listed}). This loss trains energy-based priors; use Trace_ELBO for models whose "
            "priors are normalised."
        )
    return found
