r"""An AIS run from its options: the schedule (with the pilot run of ``"adaptive"``), chunks of
chains, and the traced potential. The estimators of :mod:`pyro_vsm.evaluation` supply how to draw
the chains' start and how to evaluate the target; this module does the rest.
"""

import contextlib
from typing import NamedTuple

import torch

from ._trace import trace_function
from .ais_options import kernel_settings
from .annealing import (
    annealing_schedule,
    check_schedule,
    pilot_length,
    run_ais,
    thermodynamic_schedule,
)

__all__ = ["AISRun", "annealed_importance_sampling"]

#: potential evaluations from which ``compile=None`` traces the potential
COMPILE_FROM_EVALUATIONS = 4000


class AISRun(NamedTuple):
    r"""The result of :func:`annealed_importance_sampling`.

    :ivar log_weights: ``[C, B]``.
    :ivar acceptance_rate: ``[B]``.
    :ivar step_size: ``[B]``, averaged over chunks of chains.
    :ivar betas: the schedule of the final run, ``[T' + 1, B]`` (``T' < T`` after a pilot).
    :ivar num_temperatures: ``T``, the pilot's temperatures included.
    """

    log_weights: torch.Tensor
    acceptance_rate: torch.Tensor
    step_size: torch.Tensor
    betas: torch.Tensor
    num_temperatures: int


def annealed_importance_sampling(init_fn, make_target, num_chains, options, progress_bar=None):
    r"""Runs AIS for a batch of ``B`` targets.

    :param init_fn: ``c -> positions [c, B, D]``, independent draws from the start :math:`f_0`.
    :param make_target: ``c -> target``, the function ``(z, beta) -> (U, grad U, log f_0,
        log f_1)`` for ``c`` chains (see :func:`~pyro_vsm.samplers.annealing.autograd_target`).
    :param int num_chains: chains per target.
    :param options: an :class:`~pyro_vsm.samplers.AISOptions`.
    :param progress_bar: ``total -> context manager`` yielding an object with ``update(n)`` (a
        tqdm bar), advanced once per temperature and chunk of chains.
    :returns: an :class:`AISRun`.
    """
    settings = kernel_settings(options)
    total = options.num_temperatures
    compile_ = options.compile
    if compile_ is None:
        evaluations = total * (settings.steps * settings.num_leapfrog + 1)
        compile_ = evaluations >= COMPILE_FROM_EVALUATIONS
    targets = {}

    def target_for(z):
        c = z.shape[0]
        if c not in targets:
            target = make_target(c)
            if compile_:
                traced = trace_function(target, z, z.new_zeros(z.shape[1:2]))
                target = target if traced is None else traced
            targets[c] = target
        return targets[c]

    chunk = options.chain_chunk_size or num_chains
    sizes = [min(chunk, num_chains - start) for start in range(0, num_chains, chunk)]
    schedule = options.schedule
    # the pilot measures the variance over chains: at least two of them
    pilot_chains = min(num_chains, max(sizes[0], 2))
    split = (
        pilot_length(total, options)
        if isinstance(schedule, str) and schedule == "adaptive" and pilot_chains > 1
        else None
    )
    if torch.is_tensor(schedule):
        steps = (schedule.shape[0] - 1) * len(sizes)
        total = schedule.shape[0] - 1
    elif split is not None:
        steps = split[0] + split[1] * len(sizes)
    else:
        steps = total * len(sizes)
    with progress_bar(steps) if progress_bar is not None else contextlib.nullcontext() as bar:
        if torch.is_tensor(schedule):
            betas = schedule
        elif split is not None:
            z = init_fn(pilot_chains)
            grid = annealing_schedule(split[0], "sigmoid", dtype=z.dtype, device=z.device)
            pilot = run_ais(z, target_for(z), grid, options, record_variance=True, progress=bar)
            variances = torch.cat([pilot.variances, pilot.variances[-1:]])
            betas = thermodynamic_schedule(grid, variances, split[1])
        else:
            betas = None
        results = []
        for c in sizes:
            z = init_fn(c)
            if betas is None:
                fixed = "sigmoid" if schedule == "adaptive" else schedule
                betas = annealing_schedule(total, fixed, dtype=z.dtype, device=z.device)
            results.append(run_ais(z, target_for(z), betas, options, progress=bar))
    like = results[0].log_weights
    weights = torch.tensor(sizes, dtype=like.dtype, device=like.device)[:, None] / num_chains
    betas = check_schedule(betas, like.shape[1], like)
    return AISRun(
        log_weights=torch.cat([r.log_weights for r in results], 0),
        acceptance_rate=(torch.stack([r.acceptance_rate for r in results]) * weights).sum(0),
        step_size=(torch.stack([r.step_size for r in results]) * weights).sum(0),
        betas=betas,
        num_temperatures=total,
    )
