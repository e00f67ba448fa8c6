r"""Per-data-point traces of a model (and guide) for the evaluators.

Pyro's :func:`~pyro.infer.importance.vectorized_importance_weights` sums every site over all its
plates, which gives one joint weight for the whole batch. The evaluators here need one weight per
element of the *data plate* — the plate that encloses the observed sites — so they keep the
per-site log-densities along that plate:

* :func:`inspect_model` runs the guide (if any) and the model once and records the latent sites,
  the data plate, ``max_plate_nesting`` and any plate-subsample indices (which are then held fixed
  so that every later run sees the same minibatch);
* :func:`per_point` reduces a site's log-density (or any per-element quantity) to shape
  ``[S, N]``: the sample dim of the evaluation plate and the data plate;
* :class:`PointFlattener` moves a site's value to the layout ``[S, N, D]`` (and back), which the
  AIS sampler uses so that one step size per data point broadcasts over every latent site;
* :class:`InflateScale` widens a guide's location-scale distributions (importance proposals with
  ``proposal_scale > 1``).

Every run under an evaluation plate puts ``S`` samples in a ``pyro.plate`` at
``dim = -(max_plate_nesting + 1)``, left of all the model's plates, as Pyro's own vectorized
importance sampler does.
"""

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..ops.sites import sample_sites, subsample_indices

EVAL_PLATE = "_pyro_vsm_eval_samples"


@dataclass
class ModelInfo:
    r"""What :func:`inspect_model` learned from one run of the model (and guide).

    :param list latents: latent site names, in model order.
    :param list observed: observed site names.
    :param str data_plate: the plate of the data points (``None``: the batch is one point).
    :param int data_dim: the data plate's (negative) batch dim, or ``None``.
    :param int num_points: the number ``N`` of data points.
    :param int max_plate_nesting: the plate nesting of model and guide.
    :param dict subsample: ``{plate name: subsample indices}``, held fixed in later runs.
    :param dict supports: ``{latent name: support}`` of the model's prior.
    :param dict event_dims: ``{latent name: event dim}``.
    """

    latents: list  # latent site names, in model order
    observed: list  # observed site names
    data_plate: str | None
    data_dim: int | None  # the data plate's (negative) batch dim
    num_points: int
    max_plate_nesting: int
    subsample: dict = field(default_factory=dict)  # plate name -> fixed subsample indices
    supports: dict = field(default_factory=dict)  # latent name -> support (model's prior)
    event_dims: dict = field(default_factory=dict)  # latent name -> event dim


def _vectorized_frames(site):
    return [f for f in site["cond_indep_stack"] if f.vectorized]


def _sample_sites(trace):
    return [site for _, site in sample_sites(trace)]


def inspect_model(
    model, guide, args, kwargs, max_plate_nesting=None, data_plate=None, caller="evaluation"
):
    r"""Runs ``guide`` (if given) and ``model`` once and returns a :class:`ModelInfo`: the
    preamble every evaluator shares.

    :param model: the model.
    :param guide: the guide, or ``None``.
    :param tuple args: positional arguments of model and guide.
    :param dict kwargs: keyword arguments of model and guide.
    :param max_plate_nesting: as for Pyro's ELBOs; read from the run when ``None``.
    :param str data_plate: the plate of the data points; by default the outermost plate
        enclosing every observed site.
    :param str caller: the evaluator's name, for error messages.

    :raises ValueError: naming the site or argument, when the model has no observed site, when a
        latent is outside the data plate, when the guide misses a model latent, or when an
        observed value is not finite.
    """
    named = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument '{k}'", a) for k, a in kwargs.items()]
    for what, a in named:
        if torch.is_tensor(a) and a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise ValueError(f"{caller}: {what} of the model has non-finite values")
    with poutine.block(), torch.no_grad():
        if guide is not None:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
        else:
            guide_trace = None
            model_trace = poutine.trace(model).get_trace(*args, **kwargs)

    sites = _sample_sites(model_trace)
    observed = [s for s in sites if s["is_observed"]]
    latents = [s for s in sites if not s["is_observed"]]
    if not observed:
        raise ValueError(f"{caller}: the model has no observed sample site (pass obs=...)")
    for s in observed:
        v = s["value"]
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{caller}: observed site '{s['name']}' has non-finite values")
    if guide_trace is not None:
        guide_names = {s["name"] for s in _sample_sites(guide_trace) if not s["is_observed"]}
        missing = [s["name"] for s in latents if s["name"] not in guide_names]
        if missing:
            raise ValueError(
                f"{caller}: the guide has no site for model latent(s) "
                f"{', '.join(repr(m) for m in missing)}"
            )

    all_sites = sites + (_sample_sites(guide_trace) if guide_trace is not None else [])
    nesting = max([-f.dim for s in all_sites for f in _vectorized_frames(s)], default=0)
    if max_plate_nesting is None:
        max_plate_nesting = nesting
    elif max_plate_nesting < nesting:
        raise ValueError(
            f"{caller}: max_plate_nesting={max_plate_nesting} but the model nests {nesting} plates"
        )

    # the data plate: a plate enclosing every observed site (the outermost such plate)
    common = None
    for s in observed:
        frames = [f.name for f in _vectorized_frames(s)]
        common = frames if common is None else [f for f in common if f in frames]
    frames_by_name = {f.name: f for s in observed for f in _vectorized_frames(s)}
    if data_plate is None:
        data_plate = common[0] if common else None
    elif data_plate not in (common or []):
        raise ValueError(
            f"{caller}: data_plate={data_plate!r} does not enclose every observed site "
            f"(plates enclosing all of them: {common})"
        )
    if data_plate is None:
        data_dim, num_points = None, 1
    else:
        frame = frames_by_name[data_plate]
        data_dim, num_points = frame.dim, frame.size
        for s in latents:
            if data_plate not in [f.name for f in _vectorized_frames(s)]:
                raise ValueError(
                    f"{caller}: latent site '{s['name']}' is outside the data plate "
                    f"'{data_plate}'; per-data-point log-likelihoods need every latent to be "
                    "local to a data point"
                )

    source = guide_trace if guide_trace is not None else model_trace
    subsample = subsample_indices(source)
    return ModelInfo(
        latents=[s["name"] for s in latents],
        observed=[s["name"] for s in observed],
        data_plate=data_plate,
        data_dim=data_dim,
        num_points=num_points,
        max_plate_nesting=max_plate_nesting,
        subsample=subsample,
        supports={s["name"]: s["fn"].support for s in latents},
        event_dims={s["name"]: len(s["fn"].event_shape) for s in latents},
    )


def run_vectorized(
    fn, num_samples, info, args, kwargs, condition=None, replay_trace=None, inflate=1.0
):
    r"""Traces ``fn`` with ``num_samples`` draws in an evaluation plate left of every model plate.

    ``condition`` fixes site values (latents, and the plates' subsample indices are always
    fixed); ``replay_trace`` replays a guide trace instead. Returns the trace.

    :param fn: the model or guide.
    :param int num_samples: the size ``S`` of the evaluation plate.
    :param ModelInfo info: from :func:`inspect_model`.
    :param tuple args: positional arguments of ``fn``.
    :param dict kwargs: keyword arguments of ``fn``.
    :param dict condition: ``{site name: value}`` to condition on.
    :param replay_trace: a trace to replay the latents from.
    :param float inflate: multiplies the scale of every latent location-scale distribution
        (:class:`InflateScale`).
    """
    data = dict(info.subsample)
    if condition is not None:
        data.update(condition)
    fn = poutine.condition(fn, data=data)
    if replay_trace is not None:
        fn = poutine.replay(fn, trace=replay_trace)
    if inflate != 1.0:
        fn = InflateScale(inflate)(fn)
    with (
        poutine.trace() as tracer,
        pyro.plate(EVAL_PLATE, num_samples, dim=-(info.max_plate_nesting + 1)),
    ):
        fn(*args, **kwargs)
    return tracer.trace


def per_point(t, info, event_dim=0):
    r"""Reduces a per-element tensor of a site to shape ``[S, N]``.

    ``t`` has the site's batch shape (left-padded as needed) followed by ``event_dim`` dims: the
    event dims and every batch dim other than the evaluation plate and the data plate are summed.

    :param torch.Tensor t: the per-element tensor.
    :param ModelInfo info: from :func:`inspect_model`.
    :param int event_dim: the number of trailing event dims of ``t``.
    """
    if event_dim:
        t = t.sum(tuple(range(-event_dim, 0)))
    nb = info.max_plate_nesting + 1
    if t.dim() > nb:
        raise ValueError(f"unexpected batch shape {tuple(t.shape)} (max_plate_nesting too small?)")
    t = t.reshape((1,) * (nb - t.dim()) + t.shape)
    if info.data_dim is None:
        return t.reshape(t.shape[0], -1).sum(-1, keepdim=True)
    keep = (0, nb + info.data_dim)
    others = tuple(d for d in range(1, nb) if d not in keep)
    if others:
        t = t.sum(others, keepdim=True)
    return t.reshape(t.shape[0], t.shape[keep[1]])


def site_log_density(site, info):
    r"""Per-point ``[S, N]`` log-density of a sample site, masked but not plate-scaled.

    :param dict site: a sample site of a trace from :func:`run_vectorized`.
    :param ModelInfo info: from :func:`inspect_model`.
    """
    lp = site["fn"].log_prob(site["value"])
    lp = scale_and_mask(lp, 1.0, site["mask"])
    return per_point(lp, info)


def per_point_log_density(trace, names, info, like=None):
    r"""Sum of :func:`site_log_density` over ``names``, shape ``[S, N]`` (or ``[1, 1]`` zeros,
    with ``like``'s dtype and device, when ``names`` is empty).

    :param trace: a trace from :func:`run_vectorized`.
    :param names: the names of the sites to sum.
    :param ModelInfo info: from :func:`inspect_model`.
    :param torch.Tensor like: gives dtype and device of the zeros for empty ``names``.
    """
    total = None
    for name in names:
        lp = site_log_density(trace.nodes[name], info)
        total = lp if total is None else total + lp
    return like.new_zeros((1, 1)) if total is None else total


class PointFlattener:
    r"""Moves a site's value between its own layout and ``[S, N, D]`` (one row per data point).

    :param torch.Tensor value: a value of the site (gives its layout).
    :param ModelInfo info: from :func:`inspect_model`.
    :param int event_dim: the site's event dim.
    """

    def __init__(self, value, info, event_dim):
        nb = info.max_plate_nesting + 1
        self.shape = torch.Size((1,) * (nb + event_dim - value.dim()) + value.shape)
        self.data_axis = None if info.data_dim is None else nb + info.data_dim
        self.num_points = info.num_points

    def flatten(self, value):
        r"""The value in the layout ``[S, N, D]``.

        :param torch.Tensor value: a value in the site's layout.
        """
        v = value.reshape(self.shape)
        if self.data_axis is None:
            return v.reshape(v.shape[0], 1, -1)
        v = v.movedim(self.data_axis, 1)
        return v.reshape(v.shape[0], v.shape[1], -1)

    def unflatten(self, flat):
        r"""The inverse of :meth:`flatten`.

        :param torch.Tensor flat: a value in the layout ``[S, N, D]``.
        """
        if self.data_axis is None:
            return flat.reshape((flat.shape[0],) + self.shape[1:])
        moved = list(self.shape)
        n = moved.pop(self.data_axis)
        moved.insert(1, n)
        moved[0] = flat.shape[0]
        return flat.reshape(moved).movedim(1, self.data_axis)


def _inflate(fn, factor, name):
    if isinstance(fn, dist.Independent):
        return dist.Independent(_inflate(fn.base_dist, factor, name), fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        return _inflate(fn.base_dist, factor, name).expand(fn.batch_shape)
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc, fn.scale * factor)
    if isinstance(fn, dist.StudentT):
        return dist.StudentT(fn.df, fn.loc, fn.scale * factor)
    if isinstance(fn, dist.Laplace):
        return dist.Laplace(fn.loc, fn.scale * factor)
    if isinstance(fn, dist.Cauchy):
        return dist.Cauchy(fn.loc, fn.scale * factor)
    if isinstance(fn, dist.MultivariateNormal):
        return dist.MultivariateNormal(fn.loc, scale_tril=fn.scale_tril * factor)
    if isinstance(fn, dist.LowRankMultivariateNormal):
        return dist.LowRankMultivariateNormal(
            fn.loc, fn.cov_factor * factor, fn.cov_diag * factor**2
        )
    raise ValueError(
        f"proposal_scale != 1 needs a location-scale guide distribution (Normal, StudentT, "
        f"Laplace, Cauchy, MultivariateNormal, LowRankMultivariateNormal) at site '{name}', "
        f"got {type(fn).__name__}"
    )


class InflateScale(Messenger):
    r"""Multiplies the scale of every latent location-scale distribution by ``factor``.

    ``factor = sqrt(2)`` doubles the variance, the proposal the LiBI paper (Yacoby et al.,
    Appendix E) uses for importance-sampled log-likelihoods.

    :param float factor: the positive factor.
    """

    def __init__(self, factor):
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"proposal_scale must be a positive number, got {factor!r}")
        super().__init__()
        self.factor = float(factor)

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        msg["fn"] = _inflate(msg["fn"], self.factor, msg["name"])


def progress_bar(total, desc, progress):
    r"""A tqdm bar; ``progress=None`` shows it only on an interactive terminal.

    :param int total: the number of steps.
    :param str desc: the bar's label.
    :param progress: ``True``, ``False`` or ``None``.
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, disable=None if progress is None else not progress, leave=False
    )
