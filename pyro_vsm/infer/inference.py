r"""Objectives assembled from :class:`~pyro_vsm.infer.traces.ScoreTraces`.

Each function returns ``{site name: scalar}``: the objective summed over the site's plates (with
plate-subsampling scales applied, as ``Trace_ELBO`` does) and over the particles of one trace.
The caller sums the sites and divides by the number of particles. Keeping the sites apart lets a
non-finite loss be reported with the site that produced it.

Inference (guide) objectives, Section 3.3 and Algorithm 1 of [1]:

* ``"kl"``: :math:`\mathbb{D}_{KL}[q(z|x) \| p(z|x)] = -\mathrm{ELBO} + \log p(x)` with reparametrised
  samples (the ``log p(x)`` constant is not included: the value is the negative ELBO);
* ``"fisher"``: the posterior Fisher divergence
  :math:`\tfrac12\mathbb{E}_q\lVert\nabla_z\log q(z|x) - \nabla_z\log p(x, z)\rVert^2`
  with ``z`` sampled and detached, so the guide parameters receive gradients only through the
  analytic score :math:`\nabla_z\log q` (the biased "no reparametrisation" gradient, eq. 32);
* ``"fisher-reparam"``: the same divergence with reparametrised ``z`` (the unbiased gradient,
  eq. 31), which can converge to low-density local optima (Section 3.3.2).

References:

[1] `On the failure of variational score matching for VAE models`,
    Li K. Wenliang (2022)
"""

from pyro.distributions.util import sum_rightmost

INFERENCE_OBJECTIVES = ("kl", "fisher", "fisher-reparam")


def check_inference(inference):
    r"""Raises ``ValueError`` unless ``inference`` is one of :data:`INFERENCE_OBJECTIVES`.

    :param str inference: the ``inference`` option of a loss.
    """
    if inference not in INFERENCE_OBJECTIVES:
        raise ValueError(f"inference must be one of {INFERENCE_OBJECTIVES}, got {inference!r}")


def inference_latent_mode(inference):
    r"""Whether the inference objective differentiates through the sample (``"reparam"``) or
    not (``"detach"``).

    :param str inference: ``"kl"``, ``"fisher"`` or ``"fisher-reparam"``.
    :returns: ``"reparam"`` or ``"detach"``.
    """
    return "detach" if inference == "fisher" else "reparam"


def negative_elbo_terms(st):
    r"""Per-site terms of :math:`-\mathrm{ELBO} = \mathbb{E}_q[\log q(z|x) - \log p(x, z)]`.

    :param st: a :class:`~pyro_vsm.infer.traces.ScoreTraces` whose traces carry
        ``log_prob_sum``.
    :returns: ``{sample site name: scalar}``.
    """
    terms = {}
    for name, site in st.model_trace.nodes.items():
        if site["type"] == "sample":
            terms[name] = -site["log_prob_sum"]
    for name, site in st.guide_trace.nodes.items():
        if site["type"] == "sample":
            terms[name] = terms.get(name, 0.0) + site["log_prob_sum"]
    return terms


def posterior_fisher_terms(st):
    r"""Per-latent terms of
    :math:`\tfrac12\lVert\nabla_z\log q(z|x) - \nabla_z\log p(x,z)\rVert^2`.

    :param st: a :class:`~pyro_vsm.infer.traces.ScoreTraces` with latent scores.
    :returns: ``{latent site name: scalar}``.
    """
    terms = {}
    for lat in st.latents:
        sq = sum_rightmost((lat.score_q - lat.score_p).pow(2), lat.event_dim)
        terms[lat.name] = lat.weight(0.5 * sq).sum()
    return terms


def m1_terms(st, include_guide_term=True):
    r"""Per-observed-site terms of M1 (eq. 8 of Wenliang, 2022; see the module's references).

    .. math::

        M_1(x) = \mathbb{E}_q\Big[\tfrac12\lVert s^p_\theta(x|z)\rVert^2
            + \nabla_x\cdot s^p_\theta(x|z)\Big] + \tfrac12\mathbb{E}_q\lVert s^q(z|x)\rVert^2

    with :math:`s^p_\theta = \nabla_x\log p_\theta(x|z)` and :math:`s^q = \nabla_x\log q(z|x)` at
    fixed ``z``. With ``include_guide_term=False`` the last term, which does not depend on the
    model, is left out (:math:`\tilde M_1` of Proposition 3.1).

    :param st: a :class:`~pyro_vsm.infer.traces.ScoreTraces` with data scores and Laplacians
        (and the guide's data scores when ``include_guide_term``).
    :param bool include_guide_term: include :math:`\tfrac12\mathbb{E}_q\lVert s^q\rVert^2`.
    :returns: ``{observed site name: scalar}``.
    """
    terms = {}
    for obs in st.observed:
        t = 0.5 * sum_rightmost(obs.score_p.pow(2), obs.event_dim) + obs.laplacian
        if include_guide_term:
            t = t + 0.5 * sum_rightmost(obs.score_q.pow(2), obs.event_dim)
        terms[obs.name] = obs.weight(t).sum()
    return terms


def guide_objective_terms(st, inference):
    r"""Per-site terms of the inference objective ``inference``: :func:`negative_elbo_terms` for
    ``"kl"``, :func:`posterior_fisher_terms` otherwise.

    :param st: a :class:`~pyro_vsm.infer.traces.ScoreTraces`.
    :param str inference: ``"kl"``, ``"fisher"`` or ``"fisher-reparam"``.
    :returns: ``{site name: scalar}``.
    """
    return negative_elbo_terms(st) if inference == "kl" else posterior_fisher_terms(st)
