r"""Annealed importance sampling (Neal, 2001): per-data-point log-likelihoods and log-partition
functions.

AIS moves ``C`` chains through the intermediate densities

.. math::

    f_t(z) = f_0(z)^{1-\beta_t}\, f_T(z)^{\beta_t}, \qquad 0 = \beta_0 < \dots < \beta_T = 1,

from a normalised start :math:`f_0` (the prior :math:`p(z)`, the guide :math:`q(z|x)` or a
Gaussian) to the unnormalised target :math:`f_T` (:math:`p(x, z)`, or :math:`e^{-E(z)}`). Each
chain accumulates :math:`\log w = \sum_t (\beta_t - \beta_{t-1})(\log f_T - \log f_0)(z_{t-1})`
and then takes HMC transitions that leave :math:`f_t` invariant. :math:`\frac1C\sum_c w_c` is
an unbiased estimate of :math:`Z_T / Z_0`, so :math:`\log\hat Z` is a stochastic lower bound.

The chains run in unconstrained space (latents with constrained support are mapped through
:func:`torch.distributions.biject_to`, with the log-Jacobian added to both densities, where it
cancels in the weights), all data points at once, each with its own step size and schedule. The
settings (schedule, chains, kernel) are an :class:`~pyro_vsm.samplers.AISOptions`, shared by both
estimators; their keyword arguments override its fields. The sampler, the schedules and the loop
are in :mod:`pyro_vsm.samplers.annealing`.

References:

[1] `Annealed importance sampling`,
    Radford M. Neal (2001)

[2] `On the quantitative analysis of decoder-based generative models`,
    Yuhuai Wu, Yuri Burda, Ruslan Salakhutdinov, Roger Grosse (2017)
"""

import math

import pyro
import torch
from torch.distributions import biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform

from ..ops.weights import effective_sample_size, log_mean_exp, log_mean_stderr
from ..samplers.ais_driver import annealed_importance_sampling
from ..samplers.ais_options import AISOptions
from ..samplers.annealing import annealing_schedule, autograd_target
from ._tracing import (
    PointFlattener,
    inspect_model,
    per_point,
    per_point_log_density,
    progress_bar,
    run_vectorized,
)
from .diagnostics import AISDiagnostics
from .sphere import sphere_augmented

__all__ = ["AISOptions", "ais_log_likelihood", "annealing_schedule", "log_partition"]


def _options(options, defaults, **overrides):
    if options is None:
        options = AISOptions(**defaults)
    elif not isinstance(options, AISOptions):
        raise ValueError(f"options must be an AISOptions, got {type(options).__name__}")
    return options.replace(**overrides)


def _is_identity(t):
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return isinstance(t, ComposeTransform) and not t.parts


class _LatentSpace:
    r"""The model's latents as one unconstrained tensor ``[C, N, D]`` (sites concatenated)."""

    def __init__(self, info, values):
        self.info = info
        self.transforms, self.flatteners, self.sizes = {}, {}, []
        for name in info.latents:
            support = info.supports[name]
            if support.is_discrete:
                raise ValueError(f"ais_log_likelihood: latent site '{name}' is discrete")
            # a mixture (e.g. the VampPrior) has the support of its components
            support = getattr(support, "base_constraint", support)
            t = biject_to(support)
            self.transforms[name] = None if _is_identity(t) else t
            u = values[name] if _is_identity(t) else t.inv(values[name])
            self.flatteners[name] = PointFlattener(u, info, info.event_dims[name])
            self.sizes.append(self.flatteners[name].flatten(u).shape[-1])

    def flatten(self, values):
        parts = []
        for name in self.info.latents:
            t, v = self.transforms[name], values[name]
            parts.append(self.flatteners[name].flatten(v if t is None else t.inv(v)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def unflatten(self, z):
        r"""Returns ``(constrained values, per-point log|det J| [C, N] or 0)``."""
        values, ladj = {}, 0.0
        flats = (z,) if len(self.sizes) == 1 else torch.split(z, self.sizes, -1)
        for name, flat in zip(self.info.latents, flats, strict=True):
            u = self.flatteners[name].unflatten(flat)
            t = self.transforms[name]
            if t is None:
                values[name] = u
                continue
            values[name] = t(u)
            j = t.log_abs_det_jacobian(u, values[name])
            batch_ndim = u.dim() - self.info.event_dims[name]
            ladj = ladj + per_point(j, self.info, event_dim=max(j.dim() - batch_ndim, 0))
        return values, ladj


def _likelihood_problem(model, guide, args, kwargs, info, proposal_scale):
    r"""``(init_fn, make_target)`` of AIS for :math:`\log p(x_n)`: draws from the prior (or the
    guide) as one unconstrained tensor ``[C, N, D]``, and the target of ``C`` chains."""
    inflate = proposal_scale if guide is not None else 1.0
    space = []

    def init_fn(c):
        with torch.no_grad():
            tr = run_vectorized(guide or model, c, info, args, kwargs, inflate=inflate)
        values = {n: tr.nodes[n]["value"].detach() for n in info.latents}
        if not space:
            space.append(_LatentSpace(info, values))
        return space[0].flatten(values)

    def make_target(c):
        def joint(z):
            # leapfrog trajectories may leave the region where the model's distributions accept
            # their parameters: no validation there; non-finite energies are rejected by HMC
            with pyro.validation_enabled(False):
                values, ladj = space[0].unflatten(z)
                mtr = run_vectorized(model, c, info, args, kwargs, condition=values)
                log_lik = per_point_log_density(mtr, info.observed, info, like=z)
                log_prior = per_point_log_density(mtr, info.latents, info, like=z)
                log_target = log_prior + log_lik + ladj
                if guide is None:
                    return log_prior + ladj, log_target
                gtr = run_vectorized(
                    guide, c, info, args, kwargs, condition=values, inflate=inflate
                )
                return per_point_log_density(gtr, info.latents, info, like=z) + ladj, log_target

        return autograd_target(joint)

    return init_fn, make_target


def ais_log_likelihood(
    model,
    *args,
    guide=None,
    options=None,
    num_temperatures=None,
    num_chains=None,
    num_leapfrog=None,
    step_size=None,
    target_accept=None,
    adapt_rate=None,
    schedule=None,
    chain_chunk_size=None,
    proposal_scale=1.0,
    max_plate_nesting=None,
    data_plate=None,
    return_diagnostics=False,
    progress=None,
    **kwargs,
):
    r"""Per-data-point AIS estimate of :math:`\log p(x_n)`.

    The defaults are those of :class:`~pyro_vsm.samplers.AISOptions`: 1000 temperatures on the
    adaptive schedule, 16 chains per data point, ten one-step HMC transitions per temperature.
    A keyword argument left at ``None`` takes its value from ``options``.

    :param model: a Pyro model with continuous latents local to the data plate; latents on the
        sphere are lifted to their ambient space (:func:`~pyro_vsm.evaluation.sphere_augmented`).
    :param args: positional arguments of ``model`` (and ``guide``).
    :param guide: start the chains from the guide :math:`q(z|x)` instead of the prior.
    :param AISOptions options: all the settings of the run at once.
    :param int num_temperatures: number ``T`` of annealing steps.
    :param int num_chains: independent chains ``C`` per data point.
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param float step_size: initial leapfrog step size (then adapted per data point).
    :param float target_accept: acceptance rate the step size is adapted toward.
    :param float adapt_rate: gain of the step-size adaptation (0 disables it).
    :param schedule: ``"adaptive"``, ``"sigmoid"``, ``"linear"`` or a tensor of inverse
        temperatures (``[T + 1]``, or ``[T + 1, N]`` with one column per data point).
    :param int chain_chunk_size: chains run at once (bounds memory); default all.
    :param float proposal_scale: inflates the guide's scales when ``guide`` is given.
    :param int max_plate_nesting: by default read from one run of the model.
    :param str data_plate: as in :func:`~pyro_vsm.evaluation.importance_log_likelihood`.
    :param bool return_diagnostics: also return :class:`~.diagnostics.AISDiagnostics`.
    :param progress: tqdm bar (``None``: only on an interactive terminal).
    :param kwargs: keyword arguments of ``model`` (and ``guide``).
    :returns: tensor ``[N]``, or ``(estimates, diagnostics)``.
    """
    options = _options(
        options,
        {"num_chains": 16},
        num_temperatures=num_temperatures,
        num_chains=num_chains,
        num_leapfrog=num_leapfrog,
        step_size=step_size,
        target_accept=target_accept,
        adapt_rate=adapt_rate,
        schedule=schedule,
        chain_chunk_size=chain_chunk_size,
    )
    num_chains = options.num_chains or 16
    # latents on the sphere move in their ambient space (an exact Gaussian augmentation)
    model = sphere_augmented(model)
    guide = None if guide is None else sphere_augmented(guide)
    info = inspect_model(
        model,
        guide,
        args,
        kwargs,
        max_plate_nesting=max_plate_nesting,
        data_plate=data_plate,
        caller="ais_log_likelihood",
    )
    if not info.latents:
        raise ValueError("ais_log_likelihood: the model has no latent sites")
    init_fn, make_target = _likelihood_problem(model, guide, args, kwargs, info, proposal_scale)
    run = annealed_importance_sampling(
        init_fn,
        make_target,
        num_chains,
        options,
        progress_bar=lambda total: progress_bar(total, "AIS", progress),
    )
    estimates = log_mean_exp(run.log_weights, 0)
    if not return_diagnostics:
        return estimates
    return estimates, AISDiagnostics(
        log_weights=run.log_weights,
        stderr=log_mean_stderr(run.log_weights, 0),
        ess=effective_sample_size(run.log_weights, 0),
        acceptance_rate=run.acceptance_rate,
        step_size=run.step_size,
        num_temperatures=run.num_temperatures,
        data_plate=info.data_plate,
    )


def _energy_like(energy, dtype, device):
    tensors = []
    if isinstance(energy, torch.nn.Module):
        tensors = list(energy.parameters()) + list(energy.buffers())
    ref = tensors[0] if tensors else torch.empty(())
    return torch.empty(
        (),
        dtype=dtype or (ref.dtype if tensors else torch.get_default_dtype()),
        device=device or ref.device,
    )


def log_partition(
    energy,
    event_shape=None,
    method="auto",
    *,
    options=None,
    num_temperatures=None,
    num_chains=None,
    num_leapfrog=None,
    step_size=None,
    target_accept=None,
    adapt_rate=None,
    schedule=None,
    base_loc=0.0,
    base_scale=1.0,
    dtype=None,
    device=None,
    return_diagnostics=False,
    progress=None,
):
    r""":math:`\log Z = \log\int e^{-E(z)}\,dz` of an energy on :math:`\mathbb{R}^n`.

    :param energy: callable mapping ``z`` of shape ``(..., *event_shape)`` to ``E(z)`` of shape
        ``(...)``; a ``torch.nn.Module`` may declare ``event_shape`` and may provide an exact
        ``log_partition()`` (raising :class:`NotImplementedError` when it cannot).
    :param event_shape: shape of one ``z``; read from ``energy.event_shape`` when not given.
    :param str method: ``"exact"`` (``energy.log_partition()``), ``"ais"``, or ``"auto"`` (exact
        when the energy provides it, else AIS).
    :param AISOptions options: the AIS settings (default 64 chains).
    :param int num_temperatures: overrides ``options.num_temperatures``.
    :param int num_chains: overrides ``options.num_chains``.
    :param int num_leapfrog: overrides ``options.num_leapfrog``.
    :param float step_size: overrides ``options.step_size``.
    :param float target_accept: overrides ``options.target_accept``.
    :param float adapt_rate: overrides ``options.adapt_rate``.
    :param schedule: overrides ``options.schedule``.
    :param base_loc: mean of the Gaussian AIS start :math:`\mathcal N(\mu_0, \sigma_0^2 I)`.
    :param base_scale: its standard deviation; choose it to cover the energy's mass.
    :param dtype: dtype of the chains (default: the energy's parameters', else torch's default).
    :param device: device of the chains (default: the energy's parameters').
    :param bool return_diagnostics: also return :class:`~.diagnostics.AISDiagnostics` (``None``
        for the exact value); its ``stderr`` is the standard error of the AIS estimate.
    :param progress: tqdm bar (``None``: only on an interactive terminal).
    :returns: a scalar tensor, or ``(log_z, diagnostics)``.

    An AIS estimate of :math:`\log Z` is a stochastic lower bound (its exponential is unbiased),
    so likelihoods computed with it, :math:`\log p = -E - \log\hat Z`, are optimistic.
    The AIS estimate is not differentiable in the energy's parameters (they are kept out of
    autograd during the run); the exact value, where available, is.
    """
    if method not in ("auto", "exact", "ais"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ais', got {method!r}")
    options = _options(
        options,
        {"num_chains": 64},
        num_temperatures=num_temperatures,
        num_chains=num_chains,
        num_leapfrog=num_leapfrog,
        step_size=step_size,
        target_accept=target_accept,
        adapt_rate=adapt_rate,
        schedule=schedule,
    )
    exact = getattr(energy, "log_partition", None)
    if method == "exact" and exact is None:
        raise ValueError(f"method='exact' but {type(energy).__name__} has no log_partition()")
    if method in ("exact", "auto") and exact is not None:
        try:
            value = exact()
        except NotImplementedError:
            if method == "exact":
                raise
        else:
            return (value, None) if return_diagnostics else value
    if event_shape is None:
        event_shape = getattr(energy, "event_shape", None)
        if event_shape is None:
            raise ValueError("log_partition: pass event_shape (the energy does not declare one)")
    event_shape = torch.Size(event_shape)
    num_chains = options.num_chains or 64
    like = _energy_like(energy, dtype, device)
    loc = torch.as_tensor(base_loc, dtype=like.dtype, device=like.device).expand(event_shape)
    scale = torch.as_tensor(base_scale, dtype=like.dtype, device=like.device).expand(event_shape)
    if not bool((scale > 0).all()):
        raise ValueError("log_partition: base_scale must be positive")
    d = max(event_shape.numel(), 1)
    loc, scale = loc.reshape(d), scale.reshape(d)
    log_norm = -scale.log().sum() - 0.5 * d * math.log(2 * math.pi)

    def init_fn(c):
        return loc + scale * torch.randn((c, 1, d), dtype=like.dtype, device=like.device)

    def joint(z):
        log_base = log_norm - 0.5 * ((z - loc) / scale).pow(2).sum(-1)
        e = energy(z.reshape((-1,) + event_shape))
        if e.shape != (z.shape[0],):
            raise ValueError(
                f"log_partition: energy returned shape {tuple(e.shape)} for a batch of "
                f"{z.shape[0]} points of shape {tuple(event_shape)}; expected ({z.shape[0]},)"
            )
        return log_base, -e[:, None]

    # the chains need gradients in z only: keep autograd from tracking the energy's parameters
    frozen = (
        [p for p in energy.parameters() if p.requires_grad]
        if isinstance(energy, torch.nn.Module)
        else []
    )
    for p in frozen:
        p.requires_grad_(False)
    try:
        run = annealed_importance_sampling(
            init_fn,
            lambda c: autograd_target(joint),
            num_chains,
            options,
            progress_bar=lambda total: progress_bar(total, "AIS log Z", progress),
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    log_w = run.log_weights[:, 0]
    value = log_mean_exp(log_w, 0)
    if not return_diagnostics:
        return value
    return value, AISDiagnostics(
        log_weights=log_w,
        stderr=log_mean_stderr(log_w, 0),
        ess=effective_sample_size(log_w, 0),
        acceptance_rate=run.acceptance_rate[0],
        step_size=run.step_size[0],
        num_temperatures=run.num_temperatures,
        data_plate=None,
    )
