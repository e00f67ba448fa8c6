r"""The base of every loss with parameter groups: routing, one finiteness check, phases, state.

A *grouped loss* trains several parameter groups, each on its own objective: the guide on an
inference objective and the model on a learning objective (M1, M2, M3), decoder and guide on a
bound while an energy follows score matching (energy-based priors), an encoder, a generator and
two discriminators (adversarial hybrids). Some losses update every group in each step, others one
group per step (a *phase*, chosen by the loss's :mod:`schedule <pyro_vsm.infer.schedules>`).

A subclass implements one method, :meth:`GroupedLoss._objectives`, returning the
:class:`Objective` of every group active in the given phase; the base does the rest:

* **Routing.** Each objective's gradient reaches its own parameters and nothing else
  (``backward(inputs=...)``). Every parameter the step does not update keeps ``grad = None``
  and is hidden from ``SVI``'s parameter capture, so no ``pyro.optim`` or torch optimizer steps it
  (momentum and :class:`~pyro.optim.ClippedAdam`'s learning-rate decay included). An active
  parameter the objective does not reach gets no gradient at all, not a zero. Elements of a
  tensor that another group's objective trains (one output layer for a guide's loc and scale,
  when only the loc is active) and that the step's objective does not reach are held fixed
  through the optimizer's next step, together with their per-element optimizer state.
* **Finiteness.** ``loss_and_grads`` reads all objective values back with one host
  synchronisation and raises :class:`~pyro_vsm.errors.NonFiniteLossError` naming the loss,
  step, phase, objective and site before any gradient is written, whether Pyro's validation is
  on or off. ``differentiable_loss`` does the same when :attr:`~GroupedLoss.check_finite` is
  set (it is off by default, so that a step has no host synchronisation).
* **Values.** :meth:`~GroupedLoss.loss` (``svi.evaluate_loss``) takes no step; ``svi.step``
  returns the sum of the step's objective values; :attr:`~GroupedLoss.last_terms` holds each
  objective's value of the last step as a detached tensor.
* **Plain torch.** ``loss(model, guide)`` returns an :class:`~pyro.infer.elbo.ELBOModule`
  whose forward is one step of the schedule (``differentiable_loss``, no host synchronisation)
  with gradients routed in the same way, and whose ``parameters()`` include the modules the loss
  owns (discriminators, variational priors).
* **State.** :meth:`~GroupedLoss.state_dict` / :meth:`~GroupedLoss.load_state_dict` hold the
  schedule, the loss's own state and the parameters of the modules it owns, so a resumed run
  equals an uninterrupted one.
* **Several processes** (DDP). Every decision a schedule takes from data (the values a
  schedule reads, the lagging criterion, LiBI's round scores) is the mean over processes, so
  every process takes the same phase; elements held fixed are chosen from the reduced gradient
  (:mod:`~pyro_vsm.infer.distributed`). DDP must be told that a step may leave parameters without
  a gradient (``find_unused_parameters=True``), and a non-finite value on one process must stop
  all of them: :mod:`pyro_vsm.lightning` does both.

Writing a loss on the base::

    class MyLoss(GroupedLoss):
        def __init__(self, **kwargs):
            super().__init__(schedule=CyclicSchedule(["guide", "model"]), **kwargs)

        def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
            model_params, guide_params, value = ...  # trace and compute
            group = guide_params if phase == "guide" else model_params
            return [Objective(phase, value, group)]
"""

import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer.elbo import ELBO, ELBOModule
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.util import check_if_enumerated
from torch import nn

from .._checks import positive_int
from ..errors import NonFiniteLossError
from .distributed import mean_over_processes, world_size
from .grouped_routing import (
    FrozenElements,
    expose_params,
    hide_params,
    routed,
    routed_with_grads,
    split_params,
    trace_params,
    track_optimizer_steps,
)
from .schedules import SinglePhase

__all__ = [
    "GroupedLoss",
    "Objective",
    "expose_params",
    "hide_params",
    "routed",
    "split_params",
    "trace_params",
]


@dataclass
class Objective:
    r"""One parameter group's objective in one step.

    :param str name: the objective's name (a key of :attr:`GroupedLoss.last_terms`).
    :param torch.Tensor value: the value reported (a scalar; only its detached value is used).
    :param dict params: ``{name: tensor}``, the parameters that receive this objective's gradient.
    :param surrogate: the tensor differentiated (default: ``value``), e.g. a surrogate objective
        with score-function terms.
    :param sites: ``{site name: scalar tensor}`` or a callable returning it: the terms of the
        value per site, read only to name the site of a non-finite value.
    :param bool in_total: whether the value enters the loss that ``svi.step`` returns.
    :param dict parts: named diagnostics of the value (tensors), copied into
        :attr:`GroupedLoss.last_terms` after the step.
    """

    name: str
    value: torch.Tensor
    params: dict
    surrogate: torch.Tensor | None = None
    sites: object = None
    in_total: bool = True
    parts: dict | None = None

    def differentiated(self):
        return self.value if self.surrogate is None else self.surrogate

    def site_terms(self):
        return self.sites() if callable(self.sites) else dict(self.sites or {})


# ------------------------------------------------------------------------------------------------
# the base
# ------------------------------------------------------------------------------------------------
class GroupedLoss(ELBO):
    r"""Base class of the losses with parameter groups (see the module docstring).

    Subclasses implement :meth:`_objectives`; they may override :meth:`_evaluate` (the value of
    :meth:`loss`), :meth:`_before_step` (decisions taken from data before a step),
    :meth:`_extra_state` / :meth:`_load_extra_state` (their own state) and register the modules
    they own in :attr:`owned_modules`.

    :param schedule: a :class:`~pyro_vsm.infer.schedules.Schedule` (default: one phase,
        ``"joint"``).
    :param int num_particles: the number of samples per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`; guessed from one run of
        the model and guide when particles are vectorized and it is not given.
    :param bool vectorize_particles: draw the particles in one vectorized pass (a ``pyro.plate``
        left of the model's plates) instead of a Python loop.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    Attribute :attr:`check_finite` (default ``False``): when set, ``differentiable_loss`` checks
    the step's objective values like ``loss_and_grads`` does, at the cost of one host
    synchronisation per step, and raises :class:`~pyro_vsm.errors.NonFiniteLossError` before any
    gradient is routed.
    """

    def __init__(
        self,
        *,
        schedule=None,
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        retain_graph=None,
    ):
        if not isinstance(vectorize_particles, bool):
            raise ValueError(f"vectorize_particles must be a bool, got {vectorize_particles!r}")
        super().__init__(
            num_particles=positive_int(num_particles, "num_particles"),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
        )
        self.schedule = SinglePhase() if schedule is None else schedule
        #: modules the loss owns and trains (saved by :meth:`state_dict`)
        self.owned_modules = nn.ModuleDict()
        #: each objective's value in the last step, as detached tensors
        self.last_terms = {}
        self._members = {}  # param name -> names of the objectives that have trained it
        self._frozen = None
        self._in_svi = False
        #: check the objective values in ``differentiable_loss`` (one host synchronisation)
        self.check_finite = False
        track_optimizer_steps()

    # -- what subclasses provide -----------------------------------------------------------------
    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        r"""The objectives of the groups ``phase`` updates: a list of :class:`Objective`.

        :param model: the model.
        :param guide: the guide.
        :param tuple args: the positional arguments of model and guide.
        :param dict kwargs: their keyword arguments.
        :param str phase: the schedule's phase.
        :param bool create_graph: ``False`` when only the values are needed (:meth:`loss`).
        """
        raise NotImplementedError

    def _evaluate(self, model, guide, args, kwargs):
        r"""The value :meth:`loss` returns, as a tensor: by default the total of the current
        phase's objectives."""
        objectives = self._objectives(
            model, guide, args, kwargs, phase=self.phase, create_graph=False
        )
        return self._total(objectives)

    def _before_step(self, model, guide, args, kwargs):
        r"""Called before each step (``loss_and_grads`` and ``differentiable_loss``): decisions a
        schedule takes from data. Returns nothing."""

    def _extra_state(self):
        r"""The subclass's own state (plain values and tensors)."""
        return {}

    def _load_extra_state(self, state):
        r"""Restores :meth:`_extra_state`'s output.

        :param dict state: a dictionary written by :meth:`_extra_state`.
        """

    # -- common properties ----------------------------------------------------------------------
    @property
    def phase(self):
        r"""The phase the next step takes (see the loss's schedule)."""
        return self.schedule.phase

    @property
    def step(self):
        r"""The number of steps taken (``svi.step`` or ``differentiable_loss`` calls)."""
        return self.schedule.step

    def _get_trace(self, model, guide, args, kwargs):
        # the plain (model_trace, guide_trace) pair, as Trace_ELBO returns it
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def owned_params(self, name, module):
        r"""``{param name: tensor}`` of a module the loss owns (``owned_modules[name]``).

        Under ``SVI`` the module is registered in Pyro's param store with ``pyro.module(name,
        module)`` so that SVI's optimizer steps it and per-parameter learning rates can target
        ``name``; for ``loss(model, guide)`` its parameters are used directly.

        :param str name: the module's name, also its Pyro prefix.
        :param torch.nn.Module module: the module.
        """
        trainable = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        if not self._in_svi:
            return {f"{name}.{k}": p for k, p in trainable}
        with poutine.block():
            pyro.module(name, module)
        store = pyro.get_param_store()
        params = {}
        for k, p in trainable:
            full = f"{name}$$${k}"
            if store.get_param(full).unconstrained() is not p:
                raise ValueError(
                    f"{type(self).__name__}: Pyro's param store already holds a different tensor "
                    f"under {full!r}, so SVI would not update the loss's module {name!r}: pass "
                    "another name or call pyro.clear_param_store()"
                )
            params[full] = p
        return params

    # -- one step ---------------------------------------------------------------------------------
    def _step_objectives(self, model, guide, args, kwargs):
        if self._frozen is not None:  # a previous step's freeze that no optimizer consumed
            self._frozen.remove()
            self._frozen = None
        self._before_step(model, guide, args, kwargs)
        phase = self.phase
        with torch.enable_grad(), hide_params():
            objectives = self._objectives(
                model, guide, args, kwargs, phase=phase, create_graph=True
            )
        return phase, objectives

    def _checked_values(self, objectives, phase):
        r"""The objectives' values as floats (one host synchronisation); raises
        :class:`NonFiniteLossError` when one is not finite."""
        if not objectives:
            return []
        first = objectives[0].value
        stacked = torch.stack(
            [torch.as_tensor(o.value, dtype=first.dtype).detach().reshape(()) for o in objectives]
        )
        values = stacked.tolist()
        for o, v in zip(objectives, values, strict=True):
            if not math.isfinite(v):
                raise NonFiniteLossError(self._non_finite_message(o, v, phase))
        return values

    def _non_finite_message(self, objective, value, phase):
        try:
            terms = objective.site_terms()
        except Exception:  # noqa: BLE001 - the message must not hide the original problem
            terms = {}
        bad = [n for n, t in terms.items() if not bool(torch.isfinite(torch.as_tensor(t)).all())]
        culprit = (
            f"site(s) {', '.join(repr(b) for b in bad)}"
            if bad
            else "no single site (the sum of all terms)"
        )
        return (
            f"{type(self).__name__}: non-finite loss ({value}) from the {objective.name} objective at step "
            f"{self.step} (phase {phase!r}); first non-finite term from {culprit}. No parameter "
            "was updated. Check the data, the learning rate and the likelihood's scale."
        )

    def _register_members(self, objectives):
        for o in objectives:
            for n in o.params:
                self._members.setdefault(n, set()).add(o.name)

    def _shared_elsewhere(self, name, active_names):
        return bool(self._members.get(name, set()) - active_names)

    def _freeze_unreached(self, pairs, objectives):
        r"""Holds the elements with exactly zero gradient of tensors that an inactive objective
        trains (``pairs``: ``(name, leaf, grad)``) fixed through the next optimizer step."""
        active = {o.name for o in objectives}
        masks = [
            (p, g == 0)
            for n, p, g in pairs
            if g is not None and p.is_leaf and self._shared_elsewhere(n, active)
        ]
        # tensors on the CPU without a zero-gradient element need no hold (reading the flags
        # synchronises no device there); on accelerators every candidate is held, sync-free
        on_cpu = [i for i, (_, m) in enumerate(masks) if m.device.type == "cpu"]
        if on_cpu:
            found = torch.stack([masks[i][1].any() for i in on_cpu]).tolist()
            empty = {i for i, hit in zip(on_cpu, found, strict=True) if not hit}
            masks = [m for i, m in enumerate(masks) if i not in empty]
        if masks:
            self._frozen = FrozenElements(masks)

    def _finish(self, objectives, values):
        self.last_terms = {o.name: o.value.detach() for o in objectives}
        for o in objectives:
            self.last_terms.update({k: v.detach() for k, v in (o.parts or {}).items()})
        if values is None:
            values = {o.name: o.value.detach() for o in objectives}
        else:
            values = {o.name: v for o, v in zip(objectives, values, strict=True)}
        if self.schedule.reads_values and world_size() > 1:
            values = mean_over_processes(values)  # every process takes the same decision
        self.schedule.advance(values)

    @staticmethod
    def _total(objectives):
        if not objectives:
            raise ValueError("a step must have at least one objective")
        values = [o.value.detach() for o in objectives if o.in_total]
        if not values:
            return torch.zeros_like(objectives[0].value.detach())
        return sum(values[1:], values[0])

    # -- the ELBO interface -------------------------------------------------------------------
    def loss(self, model, guide, *args, **kwargs):
        r"""The loss for the current parameters, as a float; takes no step and works under
        ``torch.no_grad()`` (``svi.evaluate_loss``).

        :param model: the model.
        :param guide: the guide.
        """
        with torch.enable_grad():
            value = self._evaluate(model, guide, args, kwargs)
        return float(value)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        r"""One step of the schedule (``svi.step``): each active group receives the gradient of its
        own objective; returns the sum of the objectives' values.

        :param model: the model.
        :param guide: the guide.
        """
        self._in_svi = True
        try:
            phase, objectives = self._step_objectives(model, guide, args, kwargs)
        finally:
            self._in_svi = False
        values = self._checked_values(objectives, phase)
        self._register_members(objectives)
        params = {}
        for o in objectives:
            params.update(o.params)
        leaves = {n: p for n, p in params.items() if p.requires_grad}
        for p in leaves.values():
            p.grad = None  # SVI leaves zeros: a group this step does not reach must get None
        last = max((i for i, o in enumerate(objectives) if o.params), default=-1)
        for i, o in enumerate(objectives):
            inputs = [p for p in o.params.values() if p.requires_grad]
            surrogate = o.differentiated()
            if inputs and torch.is_tensor(surrogate) and surrogate.requires_grad:
                retain = True if i < last else self.retain_graph
                surrogate.backward(inputs=inputs, retain_graph=retain)
        touched = {n: p for n, p in leaves.items() if p.grad is not None}
        self._freeze_unreached([(n, p, p.grad) for n, p in touched.items()], objectives)
        expose_params(touched)
        self._finish(objectives, values)
        return sum(v for o, v in zip(objectives, values, strict=True) if o.in_total)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        r"""One step of the schedule for plain torch optimizers (``loss(model, guide)``): the total
        value, whose gradient reaches each active group from its own objective only. No host
        synchronisation unless :attr:`check_finite` is set: check the value's finiteness
        yourself otherwise.

        :param model: the model.
        :param guide: the guide.
        """
        phase, objectives = self._step_objectives(model, guide, args, kwargs)
        if self.check_finite:
            self._checked_values(objectives, phase)
        self._register_members(objectives)
        proxy, pairs = None, []
        for o in objectives:
            surrogate = o.differentiated()
            if not torch.is_tensor(surrogate):
                continue
            names = {id(p): n for n, p in o.params.items()}
            out, grads = routed_with_grads(surrogate, list(o.params.values()), retain_graph=True)
            pairs.extend((names[id(p)], p, g) for p, g in grads)
            delta = out - out.detach()
            proxy = delta if proxy is None else proxy + delta
        self._freeze_unreached(pairs, objectives)
        total = self._total(objectives)
        self._finish(objectives, None)
        if proxy is None or not proxy.requires_grad:
            # a step that updates nothing: a value backward() can still be called on
            return total.detach().requires_grad_(True)
        return total + proxy

    def prepare(self, model, guide, *args, **kwargs):
        r"""Builds the modules the loss creates on its first call (e.g. a variational prior sized
        from the latent site) without taking a step, so that an optimizer built afterwards sees
        them. Losses that own no lazily created module do nothing.

        :param model: the model.
        :param guide: the guide.
        """

    # -- state --------------------------------------------------------------------------------
    def state_dict(self):
        r"""Everything needed to resume: the schedule, the loss's own state and the parameters of
        the modules it owns (plain values and tensors; ``torch.load(weights_only=True)`` reads
        it)."""
        return {
            "loss": type(self).__name__,
            "schedule": self.schedule.state_dict(),
            "members": {n: sorted(s) for n, s in self._members.items()},
            "modules": {k: m.state_dict() for k, m in self.owned_modules.items()},
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state):
        r"""Restores :meth:`state_dict`'s output. Owned modules that are created lazily must exist
        (call :meth:`prepare` first).

        :param dict state: a dictionary written by :meth:`state_dict`.
        """
        if state.get("loss") != type(self).__name__:
            raise ValueError(
                f"this state was saved by {state.get('loss')!r}, not {type(self).__name__!r}"
            )
        missing = sorted(set(state["modules"]) - set(self.owned_modules))
        if missing:
            raise ValueError(
                f"{type(self).__name__}: the saved state has module(s) {missing} that this loss "
                "has not built yet; call loss.prepare(model, guide, *args) first"
            )
        self.schedule.load_state_dict(state["schedule"])
        self._members = {n: set(s) for n, s in state["members"].items()}
        for k, sd in state["modules"].items():
            self.owned_modules[k].load_state_dict(sd)
        self._load_extra_state(state["extra"])

    def __call__(self, model, guide):
        return GroupedELBOModule(model, guide, self)


class GroupedELBOModule(ELBOModule):
    r"""The :class:`~pyro.infer.elbo.ELBOModule` of a grouped loss: its ``parameters()`` include
    the modules the loss owns.

    :param model: the model (a ``torch.nn.Module``).
    :param guide: the guide (a ``torch.nn.Module``).
    :param GroupedLoss elbo: the loss.
    """

    def __init__(self, model, guide, elbo):
        super().__init__(model, guide, elbo)
        self.owned = elbo.owned_modules
