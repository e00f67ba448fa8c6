r"""Schedules: which parameter groups move on the next step.

A schedule is a small state object with one protocol, used by every
:class:`~pyro_vsm.infer.grouped.GroupedLoss`:

* :attr:`Schedule.step` -- the number of steps taken;
* :attr:`Schedule.phase` -- the name of the phase the next step takes (the loss computes that
  phase's objectives and routes their gradients);
* :meth:`Schedule.advance` -- called once after every step with the step's objective values
  (``{objective name: value}``);
* :meth:`Schedule.state_dict` / :meth:`Schedule.load_state_dict` -- everything needed to resume
  (plain Python values, readable by ``torch.load(weights_only=True)``).

Decisions a schedule takes from data (the lagging inner loop's window rule, LiBI's round scores)
arrive through :meth:`Schedule.advance` or through methods the loss calls before a step, so a
loss running on several processes can reduce them across processes first.
"""

import math

from .._checks import check_int as _count
from .._checks import check_positive

__all__ = [
    "AlternatingSchedule",
    "AnnealingSchedule",
    "CyclicSchedule",
    "LaggingSchedule",
    "RoundsSchedule",
    "Schedule",
    "SinglePhase",
]


class Schedule:
    r"""The protocol of every schedule: a step counter and the phase of the next step."""

    #: whether :meth:`advance` decides from the values it is given (a loss on several processes
    #: then passes their mean over processes)
    reads_values = False

    def __init__(self):
        self.step = 0

    @property
    def phase(self):
        r"""The name of the phase the next step takes."""
        raise NotImplementedError

    def advance(self, values=None):
        r"""Records one finished step.

        :param dict values: the step's objective values (``{name: float or tensor}``), or ``None``.
        """
        self.step += 1

    def state_dict(self):
        r"""The state needed to resume (plain Python values)."""
        return {"step": self.step}

    def load_state_dict(self, state):
        r"""Restores :meth:`state_dict`'s output.

        :param dict state: a dictionary written by :meth:`state_dict`.
        """
        self.step = int(state["step"])


class SinglePhase(Schedule):
    r"""Every step updates every group (one phase).

    :param str name: the name of the phase.
    """

    def __init__(self, name="joint"):
        super().__init__()
        self.name = str(name)

    @property
    def phase(self):
        return self.name


class CyclicSchedule(Schedule):
    r"""A fixed cycle of phases, each repeated a number of times.

    ``CyclicSchedule([("encoder", 1), ("generator", 1), ("data_discriminator", 5)])`` takes one
    encoder step, one generator step, five data-discriminator steps, then starts again.

    :param phases: a sequence of phase names or ``(name, repeats)`` pairs (``repeats >= 0``;
        at least one phase must repeat).
    """

    def __init__(self, phases):
        super().__init__()
        parsed = []
        for entry in phases:
            name, repeats = (entry, 1) if isinstance(entry, str) else entry
            parsed.append((str(name), _count(repeats, f"repeats of phase {name!r}", 0)))
        if not parsed or sum(r for _, r in parsed) == 0:
            raise ValueError(
                f"phases must contain a phase that repeats at least once, got {phases!r}"
            )
        self.phases = tuple(parsed)
        self._cycle = [name for name, r in parsed for _ in range(r)]

    @property
    def phase(self):
        return self._cycle[self.step % len(self._cycle)]


class AlternatingSchedule(CyclicSchedule):
    r"""``guide_steps`` guide updates followed by one model update, repeated.

    Algorithm 1 of Wenliang (2022). ``guide_steps = 0`` freezes the guide: every step is a
    model step.

    :param int guide_steps: the number :math:`J \ge 0` of guide updates per model update.
    """

    def __init__(self, guide_steps=1):
        self.guide_steps = _count(guide_steps, "guide_steps", 0)
        super().__init__([("guide", self.guide_steps), ("model", 1)])

    def state_dict(self):
        return {"step": self.step, "guide_steps": self.guide_steps}

    def load_state_dict(self, state):
        if "guide_steps" in state:
            self.__init__(state["guide_steps"])
        super().load_state_dict(state)


class AnnealingSchedule(SinglePhase):
    r"""One phase, with a weight annealed linearly from 0: :math:`\beta_t = \beta\min(1, t/T)`.

    :param float beta: the final weight :math:`\beta \ge 0`.
    :param int anneal_steps: :math:`T \ge 0`; 0 uses :math:`\beta` from the first step.
    """

    def __init__(self, beta=1.0, anneal_steps=0):
        super().__init__("joint")
        self.beta = check_positive(beta, "beta", allow_zero=True)
        self.anneal_steps = _count(anneal_steps, "anneal_steps", 0)

    @property
    def weight(self):
        r"""The weight :math:`\beta_t` of the next step."""
        if self.anneal_steps == 0:
            return self.beta
        return self.beta * min(1.0, self.step / self.anneal_steps)


class RoundsSchedule(Schedule):
    r"""LiBI's rounds: ``num_rounds`` times (``likelihood_steps`` then ``inference_steps``), then
    one ``"select"`` step that restores the best round, then ``"done"``.

    The loss scores each finished round (:meth:`record_round`); the schedule keeps the scores and
    which round is best (higher is better, ties keep the earlier round, NaN never wins).

    :param int likelihood_steps: phase-1 steps per round.
    :param int inference_steps: phase-2 steps per round.
    :param int num_rounds: the number of rounds.
    """

    def __init__(self, likelihood_steps, inference_steps, num_rounds=1):
        super().__init__()
        self.likelihood_steps = _count(likelihood_steps, "likelihood_steps", 1)
        self.inference_steps = _count(inference_steps, "inference_steps", 1)
        self.num_rounds = _count(num_rounds, "num_rounds", 1)
        self.round_scores = []
        self.best_round = None

    @property
    def _cycle(self):
        return self.likelihood_steps + self.inference_steps

    @property
    def total_steps(self):
        r"""``num_rounds * (likelihood_steps + inference_steps) + 1`` (the last one selects)."""
        return self.num_rounds * self._cycle + 1

    @property
    def phase(self):
        if self.step < self.num_rounds * self._cycle:
            return "likelihood" if self.step % self._cycle < self.likelihood_steps else "inference"
        return "select" if self.step == self.num_rounds * self._cycle else "done"

    @property
    def round(self):
        r"""The (0-based) round the next step belongs to (the last round once finished)."""
        return min(self.step // self._cycle, self.num_rounds - 1)

    @property
    def round_ended(self):
        r"""Whether a round has ended and has not been scored yet."""
        return self.step > 0 and len(self.round_scores) < min(
            self.step // self._cycle, self.num_rounds
        )

    def record_round(self, score):
        r"""Records the score of the round that just ended; returns whether it is the best so far.

        :param float score: the round's validation score (higher is better).
        """
        score = float(score)
        self.round_scores.append(score)
        best = None if self.best_round is None else self.round_scores[self.best_round]
        better = best is None or (not math.isnan(score) and (math.isnan(best) or score > best))
        if better:
            self.best_round = len(self.round_scores) - 1
        return better

    def state_dict(self):
        return {
            "step": self.step,
            "round_scores": list(self.round_scores),
            "best_round": self.best_round,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.round_scores = [float(s) for s in state["round_scores"]]
        self.best_round = None if state["best_round"] is None else int(state["best_round"])


class LaggingSchedule(Schedule):
    r"""He et al.'s aggressive inference-network schedule.

    Phases ``"guide"`` (runs of guide-only steps), ``"model"`` (one model-only step after each
    run) while aggressive, then ``"joint"`` for good.

    *Inner rule*: the guide objective's values are averaged over consecutive windows of
    ``inner_window`` guide steps; a run ends after the first window whose average is not lower
    than the previous window's, or after ``max_inner_steps`` guide steps. *Outer rule*: on every
    ``check_every``-th model step the loss evaluates a criterion (:meth:`record_criterion`);
    aggressive mode ends after that model step when the criterion fell since the previous check.

    :param int inner_window: guide steps per window of the inner rule.
    :param int max_inner_steps: the most guide steps per run.
    :param int check_every: model steps between two evaluations of the criterion.
    """

    reads_values = True

    def __init__(self, inner_window=15, max_inner_steps=100, check_every=1):
        super().__init__()
        self.inner_window = _count(inner_window, "inner_window", 1)
        self.max_inner_steps = _count(max_inner_steps, "max_inner_steps", 1)
        self.check_every = _count(check_every, "check_every", 1)
        self.aggressive = True
        self.criterion_history = []
        self.switch_step = None
        self._inner_steps = 0
        self._window = []
        self._previous_window = None
        self._model_next = False
        self._model_updates = 0
        self._stop = False

    @property
    def phase(self):
        if not self.aggressive:
            return "joint"
        return "model" if self._model_next else "guide"

    @property
    def check_due(self):
        r"""Whether the next step is a model step on which the criterion is evaluated."""
        return self.phase == "model" and (self._model_updates + 1) % self.check_every == 0

    def record_criterion(self, value):
        r"""Records the criterion of this check (higher is better).

        :param float value: the criterion's value.
        """
        value = float(value)
        previous = self.criterion_history[-1] if self.criterion_history else None
        self.criterion_history.append(value)
        self._stop = previous is not None and not value >= previous

    def advance(self, values=None):
        phase = self.phase
        self.step += 1
        if phase == "guide":
            self._inner_steps += 1
            self._window.append(float(values["guide"]))
            if len(self._window) == self.inner_window:
                mean = sum(self._window) / len(self._window)
                stalled = self._previous_window is not None and not mean < self._previous_window
                self._previous_window, self._window = mean, []
                if stalled:
                    self._model_next = True
            if self._inner_steps >= self.max_inner_steps:
                self._model_next = True
        elif phase == "model":
            self._model_next = False
            self._inner_steps, self._window, self._previous_window = 0, [], None
            self._model_updates += 1
            if self._stop:
                self.aggressive = False
                self.switch_step = self.step
            self._stop = False

    def state_dict(self):
        return {
            "step": self.step,
            "aggressive": self.aggressive,
            "criterion_history": list(self.criterion_history),
            "switch_step": self.switch_step,
            "inner_steps": self._inner_steps,
            "window": list(self._window),
            "previous_window": self._previous_window,
            "model_next": self._model_next,
            "model_updates": self._model_updates,
            "stop": self._stop,
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.aggressive = bool(state["aggressive"])
        self.criterion_history = [float(v) for v in state["criterion_history"]]
        self.switch_step = state["switch_step"]
        self._inner_steps = int(state["inner_steps"])
        self._window = [float(v) for v in state["window"]]
        self._previous_window = state["previous_window"]
        self._model_next = bool(state["model_next"])
        self._model_updates = int(state["model_updates"])
        self._stop = bool(state["stop"])
