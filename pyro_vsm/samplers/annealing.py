r"""Annealed importance sampling (Neal, 2001) with an explicit state, and its schedules.

AIS moves ``C`` chains per target through the intermediate densities

.. math::

    f_\beta(z) = f_0(z)^{1-\beta}\, f_1(z)^{\beta}, \qquad 0 = \beta_0 < \dots < \beta_T = 1,

from a normalised start :math:`f_0` to an unnormalised target :math:`f_1`. Each chain accumulates

.. math::

    \log w = \sum_{t=1}^{T} (\beta_t - \beta_{t-1})\, h(z_{t-1}), \qquad h = \log f_1 - \log f_0,

and after each increment takes HMC transitions that leave :math:`f_{\beta_t}` invariant;
:math:`\frac1C\sum_c w_c` is an unbiased estimate of :math:`Z_1/Z_0`. Every target of a batch (one
per data point) has its own chains, step size and, optionally, its own schedule.

The transitions default to generalised HMC with one leapfrog step, ten transitions per
temperature and a momentum that persists (:math:`\alpha = 0.8`) across transitions and
temperatures: at the cost of today's ten leapfrog steps per temperature it mixes better than
one ten-step trajectory (measured on linear-Gaussian models, where exact transitions are
available for comparison).

Schedules: ``"sigmoid"`` (Wu et al., dense at both ends), ``"linear"``, a tensor of inverse
temperatures (shape ``[T+1]`` or ``[T+1, B]``), or ``"adaptive"``: a pilot run over a fraction
of the temperatures estimates, per target, :math:`\operatorname{Var}_{f_\beta}[h]` along the path
(the second derivative of :math:`\log Z_\beta`), and the remaining temperatures are placed so
that every step covers the same thermodynamic length
:math:`\int \sqrt{\operatorname{Var}_{f_\beta}[h]}\,d\beta`, which minimises the variance of the
log weights for a given number of steps. The pilot's chains are independent of the final run's,
so the estimate stays unbiased.

References:

[1] `Annealed importance sampling`,
    Radford M. Neal (2001)

[2] `On the quantitative analysis of decoder-based generative models`,
    Yuhuai Wu, Yuri Burda, Ruslan Salakhutdinov, Roger Grosse (2017)

[3] `Measuring the reliability of MCMC inference with bidirectional Monte Carlo`,
    Roger B. Grosse, Siddharth Ancha, Daniel M. Roy (2016)

[4] `Thermodynamic metrics and optimal paths`,
    David A. Sivak, Gavin E. Crooks (2012)
"""

import math
from typing import NamedTuple

import torch

from .._checks import positive_int
from .adaptation import StepSizeAdaptation
from .ais_options import AISOptions, kernel_settings
from .hmc import HMCState, hmc_init, hmc_kernel

__all__ = [
    "AISOptions",
    "AISResult",
    "AISState",
    "ais_init",
    "ais_step",
    "annealing_schedule",
    "autograd_target",
    "check_schedule",
    "run_ais",
    "thermodynamic_schedule",
]

FIXED_SCHEDULES = ("sigmoid", "linear")


def annealing_schedule(
    num_temperatures, schedule="sigmoid", *, radius=4.0, dtype=None, device=None
):
    r"""The inverse temperatures :math:`\beta_0 = 0 < \dots < \beta_T = 1` (``T + 1`` values) of a
    fixed schedule.

    ``"sigmoid"``: :math:`\sigma` evaluated on ``T + 1`` evenly spaced points of
    ``[-radius, radius]`` and rescaled to ``[0, 1]`` (dense near both ends); ``"linear"``: evenly
    spaced. (``"adaptive"`` schedules are chosen by the chains of :func:`run_ais`.)

    :param int num_temperatures: ``T``.
    :param str schedule: ``"sigmoid"`` or ``"linear"``.
    :param float radius: half-width of the sigmoid's argument range.
    :param dtype: dtype of the result.
    :param device: device of the result.
    :returns: tensor ``[T + 1]``.
    """
    num_temperatures = positive_int(num_temperatures, "num_temperatures")
    if schedule == "linear":
        return torch.linspace(0.0, 1.0, num_temperatures + 1, dtype=dtype, device=device)
    if schedule == "sigmoid":
        s = torch.sigmoid(
            torch.linspace(-radius, radius, num_temperatures + 1, dtype=dtype, device=device)
        )
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"schedule must be one of {FIXED_SCHEDULES}, got {schedule!r}")


def check_schedule(betas, num_targets, like):
    r"""A user's schedule tensor as ``[T + 1, B]`` on ``like``'s dtype/device, or ``ValueError``.

    :param torch.Tensor betas: ``[T + 1]`` (shared) or ``[T + 1, B]`` (one column per target).
    :param int num_targets: ``B``.
    :param torch.Tensor like: reference tensor for dtype and device.
    :returns: tensor ``[T + 1, B]``.
    """
    betas = betas.detach().to(dtype=like.dtype, device=like.device)
    if betas.dim() == 1:
        betas = betas[:, None].expand(-1, num_targets)
    ok = betas.dim() == 2 and betas.shape[0] >= 2 and betas.shape[1] == num_targets
    if ok and betas.device.type != "meta":
        ok = (
            bool((betas[1:] > betas[:-1]).all())
            and bool((betas[0] == 0).all())
            and bool((betas[-1] == 1).all())
        )
    if not ok:
        raise ValueError(
            "a schedule tensor must have shape [T+1] or [T+1, num_targets] "
            f"(num_targets = {num_targets}) and increase strictly from 0 to 1 along dim 0"
        )
    return betas


def thermodynamic_schedule(betas, variances, num_temperatures):
    r"""Per-target schedules with ``T`` steps of equal thermodynamic length.

    With :math:`s(\beta) = \sqrt{\operatorname{Var}_{f_\beta}[h]}` known on a grid (linear
    interpolation between grid points), :math:`\beta_t` solves
    :math:`\Lambda(\beta_t) = \frac tT \Lambda(1)`, :math:`\Lambda(\beta) = \int_0^\beta s`.
    Non-finite variances count as zero and :math:`s` is floored at :math:`10^{-4}\max s`, so the
    schedule stays strictly increasing.

    :param torch.Tensor betas: the grid, ``[K]`` from 0 to 1.
    :param torch.Tensor variances: :math:`\operatorname{Var}[h]` on the grid, ``[K, B]``.
    :param int num_temperatures: ``T``.
    :returns: tensor ``[T + 1, B]``.
    """
    num_temperatures = positive_int(num_temperatures, "num_temperatures")
    s = torch.where(torch.isfinite(variances), variances, torch.zeros_like(variances))
    s = s.clamp(min=0).sqrt()
    top = s.max(0).values
    s = s + 1e-4 * top + torch.where(top > 0, torch.zeros_like(top), torch.ones_like(top))
    seg = 0.5 * (s[1:] + s[:-1]) * (betas[1:] - betas[:-1])[:, None]
    cum = torch.cat([torch.zeros_like(s[:1]), seg.cumsum(0)])
    cum = (cum / cum[-1]).T.contiguous()  # [B, K]
    levels = torch.linspace(0, 1, num_temperatures + 1, dtype=s.dtype, device=s.device)
    levels = levels.expand(cum.shape[0], -1).contiguous()
    idx = torch.searchsorted(cum, levels).clamp(1, betas.shape[0] - 1)
    c0, c1 = cum.gather(1, idx - 1), cum.gather(1, idx)
    w = ((levels - c0) / (c1 - c0)).clamp(0, 1)
    out = betas[idx - 1] + w * (betas[idx] - betas[idx - 1])
    out[:, 0], out[:, -1] = 0.0, 1.0
    return out.T.contiguous()


def autograd_target(joint_fn):
    r"""The AIS target ``(z, beta) -> (U, grad U, log f_0, log f_1)`` of a function
    ``z -> (log f_0(z), log f_1(z))`` (per chain, shape ``[C, B]``), with
    :math:`U = -(\log f_0 + \beta (\log f_1 - \log f_0))` and its gradient by autograd.

    :param joint_fn: callable of the position ``[C, B, D]``.
    :returns: the target callable; ``beta`` has shape ``[B]``.
    """

    def target(z, beta):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_base, log_target = joint_fn(z)
            shape = z.shape[:-1]
            log_base, log_target = log_base.expand(shape), log_target.expand(shape)
            u = -(log_base + beta * (log_target - log_base))
            (grad,) = torch.autograd.grad(u.sum(), z, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(z)
        return u.detach(), grad.detach(), log_base.detach(), log_target.detach()

    return target


class AISState(NamedTuple):
    r"""State of the AIS chains between two temperatures.

    :ivar hmc: the kernel state at the current positions (``aux`` holds
        :math:`(\log f_0, \log f_1)` there).
    :ivar beta: the current inverse temperature per target, ``[B]``.
    :ivar log_weight: the accumulated log weights, ``[C, B]``.
    :ivar log_step_size: the adapted :math:`\log\epsilon` per target, ``[B]``.
    :ivar accept_sum: the sum over transitions of the acceptance probabilities, ``[C, B]``.
    :ivar num_transitions: the number of transitions taken.
    """

    hmc: HMCState
    beta: torch.Tensor
    log_weight: torch.Tensor
    log_step_size: torch.Tensor
    accept_sum: torch.Tensor
    num_transitions: int


class AISResult(NamedTuple):
    r"""What :func:`run_ais` returns.

    :ivar log_weights: ``[C, B]``.
    :ivar acceptance_rate: mean acceptance probability per target, ``[B]``.
    :ivar step_size: the final step size per target, ``[B]``.
    :ivar variances: :math:`\operatorname{Var}_c[h]` at every :math:`\beta_{t-1}`, ``[T, B]``
        (only with ``record_variance=True``, else ``None``).
    """

    log_weights: torch.Tensor
    acceptance_rate: torch.Tensor
    step_size: torch.Tensor
    variances: torch.Tensor | None


def _potential(target, beta):
    def fn(z):
        u, g, log_base, log_target = target(z, beta)
        return u, g, (log_base, log_target)

    return fn


def ais_init(position, target, adaptation, settings=None, generator=None):
    r"""The AIS state at :math:`\beta = 0` with chains at ``position`` (draws from :math:`f_0`).

    With ``settings.search_step_size``, each target's initial step size is first searched on
    :math:`f_0` (:meth:`~pyro_vsm.samplers.StepSizeAdaptation.search`, a few discarded
    transitions).

    :param torch.Tensor position: ``[C, B, D]``.
    :param target: ``(z, beta) -> (U, grad U, log f_0, log f_1)`` (see :func:`autograd_target`).
    :param StepSizeAdaptation adaptation: the step-size adaptation.
    :param settings: the resolved kernel settings of :class:`AISOptions`, or ``None``.
    :param torch.Generator generator: optional source of the random draws.
    :returns: an :class:`AISState`.
    """
    position = position.detach()
    beta = position.new_zeros(position.shape[1:2])
    fn = _potential(target, beta)
    hmc = hmc_init(position, fn, generator=generator)
    log_step = adaptation.init(beta.shape, position)
    if settings is not None and settings.search_step_size:

        def accept_fn(log_step):
            eps = log_step.exp()[None, :, None]
            _, info = hmc_kernel(hmc, fn, eps, settings.num_leapfrog, generator=generator)
            return info.accept_prob

        log_step = adaptation.search(log_step, accept_fn)
    return AISState(
        hmc=hmc,
        beta=beta,
        log_weight=torch.zeros_like(hmc.potential),
        log_step_size=log_step,
        accept_sum=torch.zeros_like(hmc.potential),
        num_transitions=0,
    )


def ais_step(state, target, beta, settings, adaptation, generator=None, transition=True):
    r"""From :math:`\beta_{t-1}` (``state.beta``) to :math:`\beta_t`: adds
    :math:`(\beta_t - \beta_{t-1})\,h(z)` to the log weights, then (if ``transition``) takes
    ``settings.steps`` HMC transitions that leave :math:`f_{\beta_t}` invariant.

    :param AISState state: the current state.
    :param target: ``(z, beta) -> (U, grad U, log f_0, log f_1)``.
    :param torch.Tensor beta: :math:`\beta_t` per target, ``[B]``.
    :param settings: the resolved kernel settings of :class:`AISOptions`.
    :param StepSizeAdaptation adaptation: the step-size adaptation.
    :param torch.Generator generator: optional source of the random draws.
    :param bool transition: ``False`` at the last temperature (the transitions would not change
        the weights).
    :returns: the new :class:`AISState`.
    """
    log_base, log_target = state.hmc.aux
    log_weight = state.log_weight + (beta - state.beta) * (log_target - log_base)
    if not transition:
        return state._replace(beta=beta, log_weight=log_weight)
    fn = _potential(target, beta)
    hmc = hmc_init(state.hmc.position, fn, momentum=state.hmc.momentum)
    log_step, accept_sum = state.log_step_size, state.accept_sum
    num_chains = hmc.position.shape[:1]
    for _ in range(settings.steps):
        eps = adaptation.sample(log_step, num_chains, generator)[..., None]
        hmc, info = hmc_kernel(
            hmc,
            fn,
            eps,
            settings.num_leapfrog,
            persistence=settings.persistence,
            generator=generator,
        )
        log_step = adaptation.update(log_step, info.accept_prob)
        accept_sum = accept_sum + info.accept_prob
    return AISState(
        hmc, beta, log_weight, log_step, accept_sum, state.num_transitions + settings.steps
    )


def run_ais(position, target, betas, options=None, *, record_variance=False, progress=None):
    r"""The AIS loop on one batch of chains.

    :param torch.Tensor position: initial positions ``[C, B, D]``, draws from :math:`f_0`.
    :param target: ``(z, beta) -> (U, grad U, log f_0, log f_1)``, ``beta`` of shape ``[B]``
        (see :func:`autograd_target`).
    :param torch.Tensor betas: the schedule, ``[T + 1]`` or ``[T + 1, B]``.
    :param AISOptions options: the kernel settings (the schedule and chain counts are ignored).
    :param bool record_variance: also return :math:`\operatorname{Var}_c[h]` along the path.
    :param progress: an object with ``update(n)`` (e.g. a tqdm bar) or ``None``.
    :returns: an :class:`AISResult`.
    """
    options = AISOptions() if options is None else options
    settings = kernel_settings(options)
    adaptation = StepSizeAdaptation(
        options.step_size, options.target_accept, options.adapt_rate, settings.jitter
    )
    betas = check_schedule(betas, position.shape[1], position)
    variances = []
    num_steps = betas.shape[0] - 1
    with torch.no_grad():  # the target takes its own gradients
        state = ais_init(position, target, adaptation, settings)
        for t in range(1, num_steps + 1):
            if record_variance:
                log_base, log_target = state.hmc.aux
                variances.append((log_target - log_base).var(0))
            transition = t < num_steps
            state = ais_step(state, target, betas[t], settings, adaptation, transition=transition)
            if progress is not None:
                progress.update(1)
    accept = state.accept_sum.mean(0) / max(state.num_transitions, 1)
    return AISResult(
        log_weights=state.log_weight,
        acceptance_rate=accept if state.num_transitions else torch.ones_like(accept),
        step_size=state.log_step_size.exp(),
        variances=torch.stack(variances) if record_variance else None,
    )


def pilot_length(num_temperatures, options):
    r"""``(pilot temperatures, remaining temperatures)`` of an adaptive schedule, or ``None``
    when ``T`` is too small for a pilot (then the sigmoid schedule is used)."""
    pilot = max(8, int(math.ceil(options.pilot_fraction * num_temperatures)))
    if num_temperatures < 4 * pilot:
        return None
    return pilot, num_temperatures - pilot
