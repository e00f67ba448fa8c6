r"""Guide trace → model replay, and the score plumbing shared by every score-matching loss.

One call of :func:`trace_scores` runs the guide once, replays the model on the guide's latent
values and returns, per observed site and per latent site, the pieces a score objective needs:

* ``∇ₓ log p(x|z)`` and ``Δₓ log p(x|z)`` for every observed site (closed form for Gaussian
  likelihoods, see :mod:`pyro_vsm.ops.scores`), per particle and per data point;
* ``∇ₓ log q(z|x)`` **at fixed z**: the guide is re-run on a ``requires_grad`` copy of its data
  argument while the latent values are replayed, so the derivative does not flow through the
  reparametrised ``z(x)``. With vectorized particles one batched backward pass returns one score per
  particle (``is_grads_batched``);
* ``∇_z log q(z|x)`` and ``∇_z log p(x, z)`` for every latent site, either at detached ``z`` (the
  "no reparametrisation" estimators: only the analytic scores depend on the guide's parameters) or
  at the reparametrised ``z`` (the gradient also flows through the sample).

Observed sites must be continuous with real support, and the guide must receive the observed data
as an argument: either the very tensor observed by the model, or a tensor the plate enclosing the
observed site subsamples (``data.index_select(dim, ind)`` with the plate's indices).
"""

import math
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.distributions.util import broadcast_shape, scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape
from torch.distributions import constraints

from ..errors import ScoreObjectiveError
from ..ops.scores import score_and_laplacian
from ..ops.sites import latent_sites, subsample_indices, z_scores
from .data_locator import DataLocator


def _is_real_support(support):
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real or support is constraints.real_vector


@dataclass
class ObservedScores:
    r"""Score-matching ingredients of one observed site (all shaped like the site's batch).

    :param str name: the site's name.
    :param fn: the site's distribution :math:`p(x|z)`.
    :param torch.Tensor value: the observed data ``x``.
    :param scale: the site's plate-subsampling scale (a number or tensor).
    :param mask: the site's mask (``None``, a bool or a bool tensor).
    :param int event_dim: the number of event dimensions of the site.
    :param torch.Tensor score_p: :math:`\nabla_x\log p(x|z)`, batch and event shape.
    :param torch.Tensor laplacian: :math:`\Delta_x\log p(x|z)`, batch shape.
    :param torch.Tensor score_q: :math:`\nabla_x\log q(z|x)` at fixed :math:`z`, batch and
        event shape.
    """

    name: str
    fn: object
    value: torch.Tensor
    scale: object
    mask: object
    event_dim: int
    score_p: torch.Tensor | None = None  # ∇ₓ log p(x|z), batch + event shape
    laplacian: torch.Tensor | None = None  # Δₓ log p(x|z), batch shape
    score_q: torch.Tensor | None = None  # ∇ₓ log q(z|x) at fixed z, batch + event shape

    def weight(self, term):
        r"""Applies the site's plate-subsampling scale and mask to a per-element term.

        :param torch.Tensor term: a term of the site's batch shape.
        """
        return scale_and_mask(term, self.scale, self.mask)


@dataclass
class LatentScores:
    r"""Scores of one latent site at the value the model was replayed with.

    :param str name: the site's name.
    :param torch.Tensor value: the latent value :math:`z` the model was replayed with.
    :param scale: the guide site's plate-subsampling scale (a number or tensor).
    :param mask: the guide site's mask (``None``, a bool or a bool tensor).
    :param int event_dim: the number of event dimensions of the site.
    :param torch.Tensor score_q: :math:`\nabla_z\log q(z|x)`.
    :param torch.Tensor score_p: :math:`\nabla_z\log p(x, z)`.
    """

    name: str
    value: torch.Tensor
    scale: object
    mask: object
    event_dim: int
    score_q: torch.Tensor | None = None  # ∇_z log q(z|x)
    score_p: torch.Tensor | None = None  # ∇_z log p(x, z)

    def weight(self, term):
        r"""Applies the site's plate-subsampling scale and mask to a per-element term.

        :param torch.Tensor term: a term of the site's batch shape.
        """
        return scale_and_mask(term, self.scale, self.mask)


@dataclass
class ScoreTraces:
    r"""Everything one (possibly particle-vectorized) guide/model execution produced.

    :param model_trace: the model's trace (subsample sites pruned).
    :param guide_trace: the guide's trace (subsample sites pruned).
    :param int num_vectorized: the size of the particle plate (1 without one).
    :param list observed: one :class:`ObservedScores` per observed site.
    :param list latents: one :class:`LatentScores` per latent site (when latent scores were
        requested).
    """

    model_trace: Trace
    guide_trace: Trace
    num_vectorized: int
    observed: list = field(default_factory=list)
    latents: list = field(default_factory=list)


def _check_latents(guide_trace, names, require_reparam, require_continuous, loss_name):
    for name in names:
        fn = guide_trace.nodes[name]["fn"]
        if require_continuous and fn.support.is_discrete:
            raise ScoreObjectiveError(
                f"{loss_name}: guide site '{name}' is discrete ({type(fn).__name__}); "
                "score objectives need continuous latent variables"
            )
        if require_reparam and not getattr(fn, "has_rsample", False):
            raise ScoreObjectiveError(
                f"{loss_name}: guide site '{name}' ({type(fn).__name__}) is not "
                "reparametrisable, but this objective needs reparametrised samples; use a "
                "reparametrisable distribution or an objective without reparametrisation "
                "(e.g. inference='fisher')"
            )


def _observed_sites(model_trace, loss_name, check_data):
    sites = [
        (name, site)
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"]
    ]
    if not sites:
        raise ScoreObjectiveError(
            f"{loss_name}: the model has no observed sample site; score matching needs at least "
            "one continuous observed site (pyro.sample(name, dist, obs=data))"
        )
    for name, site in sites:
        fn = site["fn"]
        if fn.support.is_discrete or not _is_real_support(fn.support):
            raise ScoreObjectiveError(
                f"{loss_name}: observed site '{name}' has {type(fn).__name__} likelihood with "
                f"support {fn.support}; score matching needs continuous observations on R^d"
            )
        if check_data and not _all_finite(site["value"]):
            raise ScoreObjectiveError(
                f"{loss_name}: observed site '{name}' has non-finite data (nan or inf)"
            )
    return sites


def _replay_trace(guide_trace, values):
    r"""A copy of ``guide_trace`` (subsample sites included) with latent values replaced."""
    tr = Trace()
    for name, site in guide_trace.nodes.items():
        tr.nodes[name] = dict(site, value=values[name]) if name in values else site
    return tr


def _shape_only(site):
    r"""A copy of a sample site whose ``log_prob`` is a zero-stride stand-in of the shape
    ``site["fn"].log_prob(site["value"])`` would have (for Pyro's shape validation)."""
    fn, value = site["fn"], site["value"]
    batch = value.shape[: value.dim() - len(fn.event_shape)]
    shape = fn.batch_shape if batch == fn.batch_shape else broadcast_shape(fn.batch_shape, batch)
    return dict(site, log_prob=value.new_zeros(()).expand(shape))


def _all_finite(value):
    r"""Whether every element of ``value`` is finite: one reduction, the elementwise check only
    when the sum is not finite (a NaN or infinity always makes it so; an overflow of finite
    values may)."""
    if math.isfinite(value.sum().item()):
        return True
    return bool(torch.isfinite(value).all())


def _particle_sums(log_probs, num_vectorized, max_plate_nesting):
    r"""Sums log-densities over everything but the particle dim: shape ``[S]`` or ``[]``."""
    total = 0.0
    for lp in log_probs:
        if num_vectorized > 1:
            pdim = lp.dim() - max_plate_nesting
            lp = lp.movedim(pdim, 0).reshape(num_vectorized, -1).sum(-1)
        else:
            lp = lp.sum()
        total = total + lp
    return total


def _per_particle_grad(output, inputs, num_vectorized, create_graph):
    r"""Gradients of ``output`` (``[S]`` or scalar) w.r.t. ``inputs``, one per particle."""
    if num_vectorized > 1:
        eye = torch.eye(num_vectorized, dtype=output.dtype, device=output.device)
        grads = torch.autograd.grad(
            output,
            inputs,
            grad_outputs=eye,
            is_grads_batched=True,
            create_graph=create_graph,
            allow_unused=True,
        )
    else:
        grads = torch.autograd.grad(output, inputs, create_graph=create_graph, allow_unused=True)
    return grads


def trace_scores(
    model,
    guide,
    args,
    kwargs,
    *,
    latent_mode,
    need_z_scores=False,
    need_x_scores=False,
    need_laplacian=False,
    need_guide_x_scores=False,
    create_graph=True,
    require_reparam=False,
    laplacian="auto",
    num_projections=1,
    num_vectorized=1,
    max_plate_nesting=float("inf"),
    locator=None,
    loss_name="score objective",
):
    r"""Runs guide and model once and collects the requested scores.

    :param model: the Pyro model.
    :param guide: the Pyro guide; it must receive the observed data as an argument when
        ``need_guide_x_scores``.
    :param tuple args: positional arguments of the model and guide.
    :param dict kwargs: keyword arguments of the model and guide.
    :param str latent_mode: ``"reparam"`` keeps the reparametrised latent values (gradients reach
        the guide's parameters through ``z``); ``"detach"`` detaches them, so the model's terms see
        a fixed ``z`` and guide parameters are reached only through the analytic densities.
    :param bool need_z_scores: compute ``∇_z log q(z|x)`` and ``∇_z log p(x, z)`` per latent site.
    :param bool need_x_scores: compute ``∇ₓ log p(x|z)`` per observed site.
    :param bool need_laplacian: compute ``Δₓ log p(x|z)`` per observed site (method ``laplacian``).
    :param bool need_guide_x_scores: compute ``∇ₓ log q(z|x)`` at fixed ``z`` per observed site.
    :param bool create_graph: keep the scores differentiable in the parameters.
    :param bool require_reparam: raise unless every latent guide site has ``rsample``.
    :param str laplacian: ``"auto"``, ``"exact"`` or ``"hutchinson"``; see
        :func:`pyro_vsm.ops.scores.score_and_laplacian`.
    :param int num_projections: Rademacher projections per Hutchinson estimate.
    :param int num_vectorized: size of the particle plate the model and guide are wrapped in
        (1 when particles are not vectorized).
    :param max_plate_nesting: the plate nesting of the model and guide (locates the particle
        dimension when ``num_vectorized > 1``).
    :param DataLocator locator: caches where each observed site's data sits in the guide's args.
    :param str loss_name: the name used in error messages.
    :returns: :class:`ScoreTraces`
    :raises ~pyro_vsm.errors.ScoreObjectiveError: when the model or guide does not fit score
        objectives (no continuous observed site, discrete or non-reparametrisable latents where
        they are not allowed, guide without the data).
    """
    validate = is_validation_enabled()
    detach = latent_mode == "detach"
    if latent_mode not in ("reparam", "detach"):
        raise ValueError(f"latent_mode must be 'reparam' or 'detach', got {latent_mode!r}")
    # The sampling pass needs a graph to the guide's parameters unless z is detached and the
    # guide's densities at this sample are not differentiated (the x-score pass re-runs the guide).
    guide_needs_graph = not detach or need_z_scores
    with torch.set_grad_enabled(guide_needs_graph and torch.is_grad_enabled()):
        full_guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    names = [name for name, _ in latent_sites(full_guide_trace)]
    _check_latents(
        full_guide_trace, names, require_reparam and not detach, need_z_scores, loss_name
    )
    subsamples = subsample_indices(full_guide_trace)

    values = {}
    for name in names:
        v = full_guide_trace.nodes[name]["value"]
        if detach:
            v = v.detach()
            if need_z_scores:
                v = v.requires_grad_(True)
        values[name] = v
    replay_trace = _replay_trace(full_guide_trace, values)

    with torch.enable_grad():
        full_model_trace = poutine.trace(poutine.replay(model, trace=replay_trace)).get_trace(
            *args, **kwargs
        )
    if validate:
        check_model_guide_match(full_model_trace, full_guide_trace, max_plate_nesting)
    for name, site in full_model_trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and name not in values
        ):
            raise ScoreObjectiveError(
                f"{loss_name}: model latent site '{name}' has no matching guide site"
            )
    model_trace = prune_subsample_sites(full_model_trace)
    guide_trace = prune_subsample_sites(full_guide_trace)
    # site log-densities feed the KL objective and ∇_z log p(x, z); a model step at detached z
    # needs neither, and Pyro's shape validation then reads the shapes alone
    need_log_probs = not detach or need_z_scores
    if need_log_probs:
        with torch.enable_grad():
            model_trace.compute_log_prob()
            guide_trace.compute_log_prob()
    if validate:
        for site in list(model_trace.nodes.values()) + list(guide_trace.nodes.values()):
            if site["type"] == "sample":
                check_site_shape(site if need_log_probs else _shape_only(site), max_plate_nesting)

    result = ScoreTraces(model_trace, guide_trace, num_vectorized)
    obs_sites = _observed_sites(model_trace, loss_name, check_data=validate)
    for name, site in obs_sites:
        obs = ObservedScores(
            name,
            site["fn"],
            site["value"],
            site["scale"],
            site["mask"],
            len(site["fn"].event_shape),
        )
        if need_x_scores or need_laplacian:
            with torch.enable_grad():
                obs.score_p, obs.laplacian = score_and_laplacian(
                    site["fn"],
                    site["value"],
                    laplacian=laplacian,
                    num_projections=num_projections,
                    need_laplacian=need_laplacian,
                )
            if not create_graph:
                obs.score_p = obs.score_p.detach()
                obs.laplacian = None if obs.laplacian is None else obs.laplacian.detach()
        result.observed.append(obs)

    if need_guide_x_scores:
        locator = DataLocator() if locator is None else locator
        _guide_x_scores(
            guide,
            args,
            kwargs,
            replay_trace,
            full_model_trace,
            result,
            subsamples,
            locator,
            names,
            create_graph,
            max_plate_nesting,
            loss_name,
        )

    if need_z_scores:
        _z_scores(guide, args, kwargs, replay_trace, values, detach, create_graph, result)
    return result


def _guide_x_scores(
    guide,
    args,
    kwargs,
    replay_trace,
    full_model_trace,
    result,
    subsamples,
    locator,
    names,
    create_graph,
    max_plate_nesting,
    loss_name,
):
    relations = {
        obs.name: locator.locate(
            obs.name, full_model_trace.nodes[obs.name], args, kwargs, subsamples, loss_name
        )
        for obs in result.observed
    }
    leaves = {}
    for key, _ in relations.values():
        if key not in leaves:
            arg = args[key[1]] if key[0] == "arg" else kwargs[key[1]]
            leaves[key] = arg.detach().requires_grad_(True)
    new_args = tuple(leaves.get(("arg", i), a) for i, a in enumerate(args))
    new_kwargs = {k: leaves.get(("kwarg", k), a) for k, a in kwargs.items()}
    S = result.num_vectorized
    with torch.enable_grad():
        tr = poutine.trace(poutine.replay(guide, trace=replay_trace)).get_trace(
            *new_args, **new_kwargs
        )
        log_qs = [tr.nodes[n]["fn"].log_prob(tr.nodes[n]["value"]) for n in names]
        total = _particle_sums(log_qs, S, max_plate_nesting)
        keys = list(leaves)
        if torch.is_tensor(total) and total.requires_grad:
            grads = _per_particle_grad(total, [leaves[k] for k in keys], S, create_graph)
        else:  # q(z|x) does not depend on the data at all
            grads = [None] * len(keys)
    grads = dict(zip(keys, grads, strict=True))
    for obs in result.observed:
        key, relation = relations[obs.name]
        g = grads[key]
        if g is None:  # the guide does not look at this data: its x-score is zero
            obs.score_q = torch.zeros_like(obs.value).expand(
                obs.fn.batch_shape + obs.fn.event_shape
            )
            continue
        if relation is not None:
            dim, plate = relation
            g = g.index_select(dim, subsamples[plate])  # negative dim: particle dim unaffected
        full = obs.fn.batch_shape + obs.fn.event_shape
        if S > 1:
            pdim = len(obs.fn.batch_shape) - max_plate_nesting
            if pdim != 0:
                raise ScoreObjectiveError(
                    f"{loss_name}: observed site '{obs.name}' has batch dims left of the particle dim"
                )
            g = g.reshape((S,) + (1,) * (len(full) - 1 - obs.value.dim()) + tuple(obs.value.shape))
        obs.score_q = g.expand(torch.broadcast_shapes(g.shape, full))


def _z_scores(guide, args, kwargs, replay_trace, values, detach, create_graph, result):
    r"""Fills ``result.latents`` with ``∇_z log q(z|x)`` and ``∇_z log p(x, z)`` at ``values``."""
    model_trace, guide_trace = result.model_trace, result.guide_trace
    names = list(values)
    with torch.enable_grad():
        log_p = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                lp = scale_and_mask(site["unscaled_log_prob"], site["scale"], site["mask"])
                log_p = log_p + lp.sum()
        if detach and len(names) > 1:
            # later guide sites may depend on earlier values: re-run the guide on the leaves
            tr = poutine.trace(poutine.replay(guide, trace=replay_trace)).get_trace(*args, **kwargs)
            q_sites = [tr.nodes[n] for n in names]
        else:
            q_sites = [guide_trace.nodes[n] for n in names]
        log_q = 0.0
        for n, site in zip(names, q_sites, strict=True):
            lq = site["fn"].log_prob(values[n])
            log_q = log_q + scale_and_mask(lq, site["scale"], site["mask"]).sum()
    scores = z_scores(log_q, log_p, values, create_graph=create_graph)
    for n, (gq, gp) in scores.items():
        site = guide_trace.nodes[n]
        scale = site["scale"]
        v = values[n]
        # a latent's score is the gradient of the joint in which its own plate scale is 1
        result.latents.append(
            LatentScores(
                n,
                v,
                scale,
                site["mask"],
                len(site["fn"].event_shape),
                score_q=gq / scale,
                score_p=gp / scale,
            )
        )
