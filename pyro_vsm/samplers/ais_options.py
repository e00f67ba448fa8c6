r"""The options of annealed importance sampling, shared by
:func:`~pyro_vsm.evaluation.ais_log_likelihood` and :func:`~pyro_vsm.evaluation.log_partition`.
"""

import dataclasses
import math
from typing import NamedTuple

import torch

from .._checks import positive_int

__all__ = ["AISOptions", "SCHEDULES", "kernel_settings"]

SCHEDULES = ("adaptive", "sigmoid", "linear")

#: leapfrog steps per temperature when ``steps_per_temperature`` is not given
LEAPFROG_PER_TEMPERATURE = 10


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _unit(value, name, low_open=False):
    v = _number(value, name)
    if not ((0 < v if low_open else 0 <= v) and v < 1):
        raise ValueError(f"{name} must be in {'(0' if low_open else '[0'}, 1), got {value!r}")
    return v


@dataclasses.dataclass(frozen=True, eq=False)
class AISOptions:
    r"""Settings of annealed importance sampling (schedule, chains, HMC kernel).

    The transitions are HMC with ``num_leapfrog`` leapfrog steps each and
    ``steps_per_temperature`` transitions per temperature; the defaults (one leapfrog step, ten
    transitions, momentum persistence 0.8, no jitter) cost ten leapfrog steps per temperature, as
    one ten-step trajectory would, and mix better. Passing ``num_leapfrog=10`` alone gives the
    classic setting: one ten-step trajectory per temperature, a fresh momentum, a jittered step,
    no initial step-size search.

    :param int num_temperatures: number ``T`` of annealing steps (with ``"adaptive"``, pilot
        included).
    :param int num_chains: chains per target; ``None``: 16 for log-likelihoods, 64 for a
        log-partition function.
    :param schedule: ``"adaptive"``, ``"sigmoid"``, ``"linear"``, or a tensor of inverse
        temperatures, ``[T + 1]`` or ``[T + 1, B]`` (one column per target).
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param int steps_per_temperature: HMC transitions per temperature; ``None``:
        ``max(1, 10 // num_leapfrog)``.
    :param float step_size: initial leapfrog step size (then adapted per target).
    :param float target_accept: acceptance rate the step size is adapted toward.
    :param float adapt_rate: gain of the Robbins–Monro step-size adaptation (0 disables it).
    :param float jitter: per-chain uniform jitter of the step size, ``[0, 1)``; ``None``: 0.5
        with more than one leapfrog step, else 0.
    :param float persistence: momentum persistence :math:`\alpha \in [0, 1)` of the partial
        refresh; ``None``: 0.8 with one leapfrog step, else 0 (a fresh momentum).
    :param bool search_step_size: before annealing, double or halve each target's step size
        until a trial transition on the start distribution crosses ``target_accept`` (a few
        discarded transitions); ``None``: with one leapfrog step (where ten transitions per
        temperature adapt the step size quickly afterwards), not with more.
    :param float pilot_fraction: share of the temperatures spent on the pilot run of the
        ``"adaptive"`` schedule (at least 8; below 32 temperatures, or with a single chain,
        whose variance is not defined, the sigmoid is used). The pilot runs on the first chunk
        of chains, and on at least two chains.
    :param int chain_chunk_size: chains run at once (bounds memory); default all.
    :param bool compile: trace the potential and its gradient once into a graph of tensor
        operations (:func:`torch.fx.experimental.proxy_tensor.make_fx`) instead of running the
        model at every leapfrog step; ``None``: when the run takes at least 4000 evaluations.
        Models whose computation depends on the values of tensors (Python control flow) are
        run as they are.
    """

    num_temperatures: int = 1000
    num_chains: int | None = None
    schedule: object = "adaptive"
    num_leapfrog: int = 1
    steps_per_temperature: int | None = None
    step_size: float = 0.1
    target_accept: float = 0.65
    adapt_rate: float = 0.05
    jitter: float | None = None
    persistence: float | None = None
    search_step_size: bool | None = None
    pilot_fraction: float = 0.05
    chain_chunk_size: int | None = None
    compile: bool | None = None

    def __post_init__(self):
        positive_int(self.num_temperatures, "num_temperatures")
        for name in ("num_chains", "steps_per_temperature", "chain_chunk_size"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name)
        positive_int(self.num_leapfrog, "num_leapfrog")
        if not torch.is_tensor(self.schedule) and self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {SCHEDULES} or a tensor, got {self.schedule!r}"
            )
        if torch.is_tensor(self.schedule) and self.schedule.dim() not in (1, 2):
            raise ValueError("schedule: a tensor of shape [T+1] or [T+1, num_targets] expected")
        if not _number(self.step_size, "step_size") > 0:
            raise ValueError(f"step_size must be positive, got {self.step_size!r}")
        _unit(self.target_accept, "target_accept", low_open=True)
        if _number(self.adapt_rate, "adapt_rate") < 0:
            raise ValueError(f"adapt_rate must be non-negative, got {self.adapt_rate!r}")
        for name in ("jitter", "persistence"):
            if getattr(self, name) is not None:
                _unit(getattr(self, name), name)
        frac = _number(self.pilot_fraction, "pilot_fraction")
        if not 0 < frac <= 0.5:
            raise ValueError(f"pilot_fraction must be in (0, 0.5], got {self.pilot_fraction!r}")
        for name in ("search_step_size", "compile"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be True, False or None, got {value!r}")

    def replace(self, **changes):
        r"""A copy with the given fields replaced; ``None`` values leave a field as it is (so
        that keyword arguments left at their defaults do not override the options).

        :param changes: field name → value.
        :returns: a new :class:`AISOptions`.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown AIS option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


class KernelSettings(NamedTuple):
    r"""The resolved transition settings of :class:`AISOptions`."""

    num_leapfrog: int
    steps: int
    jitter: float
    persistence: float
    search_step_size: bool


def kernel_settings(options):
    r"""Resolves the ``None`` defaults of ``options``' kernel fields.

    :param AISOptions options: the options.
    :returns: a :class:`KernelSettings`.
    """
    leapfrog = options.num_leapfrog
    steps = options.steps_per_temperature
    if steps is None:
        steps = max(1, LEAPFROG_PER_TEMPERATURE // leapfrog)
    jitter = options.jitter if options.jitter is not None else (0.5 if leapfrog > 1 else 0.0)
    persistence = options.persistence
    if persistence is None:
        persistence = 0.8 if leapfrog == 1 else 0.0
    search = options.search_step_size
    if search is None:
        search = leapfrog == 1
    return KernelSettings(leapfrog, steps, float(jitter), float(persistence), search)
