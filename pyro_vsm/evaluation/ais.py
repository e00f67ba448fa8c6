"""Annealed importance sampling (Neal, 2001): per-data-point log-likelihoods and log-partition
functions.

AIS moves ``C`` chains through the intermediate densities

.. math::

    f_t(z) = f_0(z)^{1-\\beta_t}\\, f_T(z)^{\\beta_t}, \\qquad 0 = \\beta_0 < \\dots < \\beta_T = 1,

from a normalised start :math:`f_0` (the prior :math:`p(z)`, the guide :math:`q(z|x)` or a
Gaussian) to the unnormalised target :math:`f_T` (:math:`p(x, z)`, or :math:`e^{-E(z)}`). Each
chain accumulates :math:`\\log w = \\sum_t (\\beta_t - \\beta_{t-1})(\\log f_T - \\log f_0)(z_{t-1})`
and then takes one HMC transition that leaves :math:`f_t` invariant. :math:`\\frac1C\\sum_c w_c` is
an unbiased estimate of :math:`Z_T / Z_0`, so :math:`\\log\\hat Z` is a stochastic lower bound.

The chains run in unconstrained space (latents with constrained support are mapped through
:func:`torch.distributions.biject_to`, with the log-Jacobian added to both densities, where it
cancels in the weights). HMC (:class:`~pyro_vsm.samplers.BatchedHMC`) uses Pyro's leapfrog
integrator for all chains and data points at once, a Metropolis decision per chain and one step
size per data point adapted toward ``target_accept``. The schedule defaults to the sigmoid
spacing of Wu et al. (2017), "On the quantitative analysis of decoder-based generative models".
"""

import math

import pyro
import torch
from torch.distributions import biject_to

from .._checks import positive_int
from ..ops.weights import effective_sample_size, log_mean_exp, log_mean_stderr
from ..samplers.hmc import BatchedHMC
from ._tracing import (
    PointFlattener,
    inspect_model,
    per_point,
    per_point_log_density,
    progress_bar,
    run_vectorized,
)
from .diagnostics import AISDiagnostics

SCHEDULES = ("sigmoid", "linear")


def annealing_schedule(
    num_temperatures, schedule="sigmoid", *, radius=4.0, dtype=None, device=None
):
    """The inverse temperatures :math:`\\beta_0 = 0 < \\dots < \\beta_T = 1` (``T + 1`` values).

    ``"sigmoid"``: :math:`\\sigma` evaluated on ``T + 1`` evenly spaced points of
    ``[-radius, radius]`` and rescaled to ``[0, 1]`` (dense near both ends); ``"linear"``: evenly
    spaced.
    """
    num_temperatures = positive_int(num_temperatures, "num_temperatures")
    if schedule == "linear":
        return torch.linspace(0.0, 1.0, num_temperatures + 1, dtype=dtype, device=device)
    if schedule == "sigmoid":
        s = torch.sigmoid(
            torch.linspace(-radius, radius, num_temperatures + 1, dtype=dtype, device=device)
        )
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _betas(num_temperatures, schedule, like):
    if torch.is_tensor(schedule):
        betas = schedule.to(dtype=like.dtype, device=like.device)
        if (
            betas.dim() != 1
            or betas.numel() < 2
            or not bool((betas[1:] > betas[:-1]).all())
            or float(betas[0]) != 0.0
            or float(betas[-1]) != 1.0
        ):
            raise ValueError("a schedule tensor must increase strictly from 0 to 1")
        return betas
    return annealing_schedule(num_temperatures, schedule, dtype=like.dtype, device=like.device)


def run_ais(
    init_state,
    joint_fn,
    betas,
    *,
    num_leapfrog=10,
    step_size=0.1,
    target_accept=0.65,
    adapt_rate=0.05,
    progress=None,
    desc="AIS",
):
    """The AIS loop on a flattened state (dict of ``[C, B, D]`` tensors).

    :param joint_fn: state → ``(log f_0, log f_T)``, each ``[C, B]`` (broadcastable).
    :param betas: 1-D tensor of inverse temperatures from 0 to 1.
    :returns: ``(log_weights [C, B], mean acceptance [B], final step size [B])``.
    """
    like = next(iter(init_state.values()))
    shape = like.shape[:2]
    parts = {}

    def evaluate(state):
        lb, lt = joint_fn(state)
        parts["base"], parts["target"] = lb.detach().expand(shape), lt.detach().expand(shape)
        return lb.expand(shape), lt.expand(shape)

    beta = {"value": betas[0]}

    def potential(state):
        lb, lt = evaluate(state)
        return -((1 - beta["value"]) * lb + beta["value"] * lt)

    hmc = BatchedHMC(
        potential,
        step_size=step_size,
        num_steps=num_leapfrog,
        target_accept=target_accept,
        adapt_rate=adapt_rate,
    )
    state = {k: v.detach() for k, v in init_state.items()}
    with torch.no_grad():
        log_base, log_target = (t.detach() for t in evaluate(state))
    log_w = torch.zeros(shape, dtype=like.dtype, device=like.device)
    accept_sum = torch.zeros(shape[1], dtype=like.dtype, device=like.device)
    num_transitions = betas.numel() - 1
    with progress_bar(num_transitions, desc, progress) as bar:
        for t in range(1, betas.numel()):
            log_w = log_w + (betas[t] - betas[t - 1]) * (log_target - log_base)
            if t == num_transitions:
                break  # the last transition would not change the weights
            beta["value"] = betas[t]
            current = -((1 - betas[t]) * log_base + betas[t] * log_target)
            state, _, accept_prob, accepted = hmc.step(state, current)
            log_base = torch.where(accepted, parts["base"], log_base)
            log_target = torch.where(accepted, parts["target"], log_target)
            accept_sum = accept_sum + accept_prob.mean(0)
            bar.update(1)
    mean_accept = accept_sum / max(num_transitions - 1, 1)
    return log_w, mean_accept, hmc.step_size


class _LatentSpace:
    """Flattened unconstrained coordinates of a model's latents, per data point."""

    def __init__(self, info, values):
        self.info = info
        self.transforms = {}
        self.flatteners = {}
        for name in info.latents:
            support = info.supports[name]
            if support.is_discrete:
                raise ValueError(f"ais_log_likelihood: latent site '{name}' is discrete")
            # a mixture (e.g. the VampPrior) has the support of its components
            support = getattr(support, "base_constraint", support)
            t = biject_to(support)
            self.transforms[name] = t
            self.flatteners[name] = PointFlattener(t.inv(values[name]), info, info.event_dims[name])

    def flatten(self, values):
        return {n: self.flatteners[n].flatten(self.transforms[n].inv(v)) for n, v in values.items()}

    def unflatten(self, state):
        """Returns ``(constrained values, per-point log|det J| [C, N])``."""
        values, ladj = {}, 0.0
        for name, flat in state.items():
            u = self.flatteners[name].unflatten(flat)
            z = self.transforms[name](u)
            values[name] = z
            j = self.transforms[name].log_abs_det_jacobian(u, z)
            batch_ndim = z.dim() - self.info.event_dims[name]
            ladj = ladj + per_point(j, self.info, event_dim=max(j.dim() - batch_ndim, 0))
        return values, ladj


def ais_log_likelihood(
    model,
    *args,
    guide=None,
    num_temperatures=1000,
    num_chains=16,
    num_leapfrog=10,
    step_size=0.1,
    target_accept=0.65,
    adapt_rate=0.05,
    schedule="sigmoid",
    chain_chunk_size=None,
    proposal_scale=1.0,
    max_plate_nesting=None,
    data_plate=None,
    return_diagnostics=False,
    progress=None,
    **kwargs,
):
    """Per-data-point AIS estimate of :math:`\\log p(x_n)`.

    :param model: a Pyro model with continuous latents local to the data plate.
    :param args: positional arguments of ``model`` (and ``guide``).
    :param guide: start the chains from the guide :math:`q(z|x)` instead of the prior.
    :param int num_temperatures: number ``T`` of annealing steps.
    :param int num_chains: independent chains ``C`` per data point.
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param float step_size: initial leapfrog step size (then adapted per data point).
    :param float target_accept: acceptance rate the step size is adapted toward.
    :param float adapt_rate: gain of the step-size adaptation (0 disables it).
    :param schedule: ``"sigmoid"``, ``"linear"`` or a 1-D tensor of inverse temperatures.
    :param int chain_chunk_size: chains run at once (bounds memory); default all.
    :param float proposal_scale: inflates the guide's scales when ``guide`` is given.
    :param int max_plate_nesting: by default read from one run of the model.
    :param str data_plate: as in :func:`~pyro_vsm.evaluation.importance_log_likelihood`.
    :param bool return_diagnostics: also return :class:`~.diagnostics.AISDiagnostics`.
    :param progress: tqdm bar (``None``: only on an interactive terminal).
    :param kwargs: keyword arguments of ``model`` (and ``guide``).
    :returns: tensor ``[N]``, or ``(estimates, diagnostics)``.
    """
    num_chains = positive_int(num_chains, "num_chains")
    chain_chunk_size = positive_int(chain_chunk_size or num_chains, "chain_chunk_size")
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

    def joint_fn(space, c):
        def fn(state):
            # leapfrog trajectories may leave the region where the model's distributions accept
            # their parameters: no validation there; non-finite energies are rejected by HMC
            with pyro.validation_enabled(False):
                values, ladj = space.unflatten(state)
                mtr = run_vectorized(model, c, info, args, kwargs, condition=values)
                log_lik = per_point_log_density(mtr, info.observed, info)
                log_prior = per_point_log_density(mtr, info.latents, info)
                log_target = log_prior + log_lik + ladj
                if guide is None:
                    return log_prior + ladj, log_target
                gtr = run_vectorized(
                    guide, c, info, args, kwargs, condition=values, inflate=proposal_scale
                )
                return per_point_log_density(gtr, info.latents, info) + ladj, log_target

        return fn

    all_w, accepts, steps = [], [], []
    done = 0
    while done < num_chains:
        c = min(chain_chunk_size, num_chains - done)
        with torch.no_grad():
            source = guide if guide is not None else model
            tr = run_vectorized(
                source, c, info, args, kwargs, inflate=proposal_scale if guide is not None else 1.0
            )
            values = {n: tr.nodes[n]["value"].detach() for n in info.latents}
        space = _LatentSpace(info, values)
        state = space.flatten(values)
        like = next(iter(state.values()))
        betas = _betas(num_temperatures, schedule, like)
        log_w, acc, step = run_ais(
            state,
            joint_fn(space, c),
            betas,
            num_leapfrog=num_leapfrog,
            step_size=step_size,
            target_accept=target_accept,
            adapt_rate=adapt_rate,
            progress=progress,
            desc=f"AIS chains {done + 1}-{done + c}/{num_chains}",
        )
        all_w.append(log_w)
        accepts.append(acc * c)
        steps.append(step * c)
        done += c
    log_w = torch.cat(all_w, 0)
    estimates = log_mean_exp(log_w, 0)
    if not return_diagnostics:
        return estimates
    return estimates, AISDiagnostics(
        log_weights=log_w,
        stderr=log_mean_stderr(log_w, 0),
        ess=effective_sample_size(log_w, 0),
        acceptance_rate=sum(accepts) / num_chains,
        step_size=sum(steps) / num_chains,
        num_temperatures=betas.numel() - 1,
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
    num_temperatures=1000,
    num_chains=64,
    num_leapfrog=10,
    step_size=0.1,
    target_accept=0.65,
    adapt_rate=0.05,
    schedule="sigmoid",
    base_loc=0.0,
    base_scale=1.0,
    dtype=None,
    device=None,
    return_diagnostics=False,
    progress=None,
):
    """:math:`\\log Z = \\log\\int e^{-E(z)}\\,dz` of an energy on :math:`\\mathbb{R}^n`.

    :param energy: callable mapping ``z`` of shape ``(..., *event_shape)`` to ``E(z)`` of shape
        ``(...)``; a ``torch.nn.Module`` may declare ``event_shape`` and may provide an exact
        ``log_partition()`` (raising :class:`NotImplementedError` when it cannot).
    :param event_shape: shape of one ``z``; read from ``energy.event_shape`` when not given.
    :param str method: ``"exact"`` (``energy.log_partition()``), ``"ais"``, or ``"auto"`` (exact
        when the energy provides it, else AIS).
    :param base_loc: mean of the Gaussian AIS start :math:`\\mathcal N(\\mu_0, \\sigma_0^2 I)`.
    :param base_scale: its standard deviation; choose it to cover the energy's mass.
    :param dtype: dtype of the chains (default: the energy's parameters', else torch's default).
    :param device: device of the chains (default: the energy's parameters').
    :param bool return_diagnostics: also return :class:`~.diagnostics.AISDiagnostics` (``None``
        for the exact value); its ``stderr`` is the standard error of the AIS estimate.
    :returns: a scalar tensor, or ``(log_z, diagnostics)``.

    The remaining arguments are those of :func:`ais_log_likelihood`. An AIS estimate of
    :math:`\\log Z` is a stochastic lower bound (its exponential is unbiased), so likelihoods
    computed with it, :math:`\\log p = -E - \\log\\hat Z`, are optimistic.
    The AIS estimate is not differentiable in the energy's parameters (they are kept out of
    autograd during the run); the exact value, where available, is.
    """
    if method not in ("auto", "exact", "ais"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ais', got {method!r}")
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
    num_chains = positive_int(num_chains, "num_chains")
    like = _energy_like(energy, dtype, device)
    loc = torch.as_tensor(base_loc, dtype=like.dtype, device=like.device).expand(event_shape)
    scale = torch.as_tensor(base_scale, dtype=like.dtype, device=like.device).expand(event_shape)
    if not bool((scale > 0).all()):
        raise ValueError("log_partition: base_scale must be positive")
    d = max(event_shape.numel(), 1)
    loc, scale = loc.reshape(d), scale.reshape(d)
    init = loc + scale * torch.randn((num_chains, 1, d), dtype=like.dtype, device=like.device)
    log_norm = -scale.log().sum() - 0.5 * d * math.log(2 * math.pi)

    def joint_fn(state):
        z = state["z"]
        log_base = log_norm - 0.5 * ((z - loc) / scale).pow(2).sum(-1)
        e = energy(z.reshape((z.shape[0],) + event_shape))
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
        betas = _betas(num_temperatures, schedule, like)
        log_w, acc, step = run_ais(
            {"z": init},
            joint_fn,
            betas,
            num_leapfrog=num_leapfrog,
            step_size=step_size,
            target_accept=target_accept,
            adapt_rate=adapt_rate,
            progress=progress,
            desc="AIS log Z",
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    log_w = log_w[:, 0]
    value = log_mean_exp(log_w, 0)
    if not return_diagnostics:
        return value
    return value, AISDiagnostics(
        log_weights=log_w,
        stderr=log_mean_stderr(log_w, 0),
        ess=effective_sample_size(log_w, 0),
        acceptance_rate=acc[0],
        step_size=step[0],
        num_temperatures=betas.numel() - 1,
        data_plate=None,
    )
