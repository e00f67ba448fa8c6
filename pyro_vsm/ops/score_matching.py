r"""Sliced score matching of an unnormalized density (Song et al., 2020).

Hyvärinen's score-matching objective :math:`J(z) = \tfrac12\lVert\nabla E\rVert^2 - \Delta E`
of a density :math:`\tilde p = e^{-E}` by random projections, one Hessian-vector product per
projection instead of :math:`d` backward passes for the Laplacian.

References:

[1] `Sliced Score Matching: A Scalable Approach to Density and Score Estimation`,
    Yang Song, Sahaj Garg, Jiaxin Shi, Stefano Ermon (2020)
"""

import torch
from pyro.distributions.util import sum_rightmost

from .._checks import positive_int

__all__ = ["PROJECTIONS", "sliced_score_matching"]

PROJECTIONS = ("rademacher", "gaussian")


def _projection(like, kind):
    if kind == "rademacher":
        return torch.empty_like(like).bernoulli_(0.5) * 2 - 1
    return torch.randn_like(like)


def check_projection(projection):
    r"""Raises ``ValueError`` unless ``projection`` is one of :data:`PROJECTIONS`.

    :param str projection: the name of a projection distribution.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")


def ssm_terms(
    log_density,
    value,
    event_dim,
    num_projections,
    projection,
    variance_reduction,
    create_graph,
):
    r"""``(J, log_density(z))`` per element, ``z`` a detached leaf copy of ``value``.

    The work of :func:`sliced_score_matching`, which checks the arguments; the log-density is
    returned too so that callers can reuse it.

    :param log_density: callable ``z -> log p~(z)``, shape ``z.shape[:-event_dim]``.
    :param torch.Tensor value: points ``z``.
    :param int event_dim: number of trailing event dims of ``z``.
    :param int num_projections: number of projections :math:`v` averaged over.
    :param str projection: ``"rademacher"`` or ``"gaussian"``.
    :param bool variance_reduction: use the variance-reduced form.
    :param bool create_graph: keep the result differentiable in the density's parameters.
    :returns: ``(J, log_density(z))``, both of shape ``value.shape[:-event_dim]``.
    """
    z = value.detach().requires_grad_(True)
    with torch.enable_grad():
        lp = log_density(z)
        if not torch.is_tensor(lp) or lp.shape != z.shape[: z.dim() - event_dim]:
            got = tuple(lp.shape) if torch.is_tensor(lp) else type(lp).__name__
            raise ValueError(
                f"sliced_score_matching: the log-density returned {got} for a value of shape "
                f"{tuple(z.shape)} with event_dim={event_dim}"
            )
        if not lp.requires_grad:  # constant in z: zero score, zero divergence
            zero = torch.zeros_like(lp)
            return zero, lp
        (score,) = torch.autograd.grad(lp.sum(), z, create_graph=True, allow_unused=True)
        if score is None:
            score = torch.zeros_like(z)
        j = 0.0
        if variance_reduction:
            sq = 0.5 * sum_rightmost(score.pow(2), event_dim)
            j = sq if create_graph else sq.detach()
        for _ in range(num_projections):
            v = _projection(z, projection)
            vs = (v * score).sum()
            hvp = None
            if vs.requires_grad:
                (hvp,) = torch.autograd.grad(
                    vs, z, create_graph=create_graph, retain_graph=True, allow_unused=True
                )
            div = torch.zeros_like(lp) if hvp is None else sum_rightmost(v * hvp, event_dim)
            term = div
            if not variance_reduction:
                proj = sum_rightmost(v * score, event_dim)
                term = term + 0.5 * (proj.pow(2) if create_graph else proj.detach().pow(2))
            j = j + term / num_projections
        if not create_graph:
            j = j.detach()
    return j, lp


def sliced_score_matching(
    log_density,
    value,
    *,
    event_dim=1,
    num_projections=1,
    projection="rademacher",
    variance_reduction=True,
    create_graph=True,
):
    r"""Per-sample sliced score matching objective (Song et al., 2020) of an unnormalized density.

    With :math:`s(z) = \nabla_z \log\tilde p(z) = -\nabla_z E(z)` and projections :math:`v` with
    :math:`\mathbb E[vv^\top] = I` (Rademacher or standard Gaussian),

    .. math::

        J(z) = \tfrac12\lVert s(z)\rVert^2 + v^\top \nabla_z\big(v^\top s(z)\big)
        \quad\text{(variance reduced)}, \qquad
        J(z) = \tfrac12 (v^\top s(z))^2 + v^\top \nabla_z\big(v^\top s(z)\big),

    averaged over ``num_projections`` draws of :math:`v`. Both have expectation (over :math:`v`)
    :math:`\tfrac12\lVert\nabla E\rVert^2 - \Delta E`, Hyvärinen's score-matching objective,
    whose expectation under the data equals the Fisher divergence up to a constant. (Algorithm 1
    of "Variational inference with unnormalized priors" writes the Hessian term with a ``+``
    sign; with :math:`s = -\nabla E` the correct sign is the one above.)

    :param log_density: callable ``z -> log p~(z)``, shape ``z.shape[:-event_dim]`` (e.g. an
        ``EnergyDistribution``'s ``log_prob`` or ``lambda z: -energy(z)``).
    :param torch.Tensor value: points ``z``; they are detached (the objective is a function of
        the density's parameters only).
    :param int event_dim: number of trailing event dims of ``z``.
    :param int num_projections: number of projections :math:`v` averaged over.
    :param str projection: the distribution of :math:`v`, ``"rademacher"`` or ``"gaussian"``.
    :param bool variance_reduction: use the variance-reduced form (the exact
        :math:`\tfrac12\lVert s\rVert^2` instead of its projection).
    :param bool create_graph: keep the result differentiable in the density's parameters.
    :returns: ``J`` per sample, shape ``value.shape[:-event_dim]``.
    """
    check_projection(projection)
    num_projections = positive_int(num_projections, "num_projections")
    j, _ = ssm_terms(
        log_density,
        value,
        int(event_dim),
        num_projections,
        projection,
        bool(variance_reduction),
        create_graph,
    )
    return j
