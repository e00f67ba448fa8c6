r"""Gradient routing for grouped losses: which parameters a step's objectives train.

``SVI.step`` steps every parameter the loss touched while it ran (it records them with
``poutine.trace(param_only=True)``) and then sets their gradients to zeros. Optimizers with
momentum move a parameter even when its gradient is zero, and ClippedAdam's learning-rate decay
ticks for every stepped parameter. A grouped loss therefore computes its objectives with param
sites hidden from SVI (:func:`hide_params`), accumulates each objective's gradient only into its
group, and re-emits exactly the parameters that received a gradient (:func:`expose_params`).
"""

import weakref

import pyro
import torch
from pyro import poutine
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from .distributed import world_size

__all__ = [
    "FrozenElements",
    "expose_params",
    "hide_params",
    "routed",
    "routed_with_grads",
    "split_params",
    "trace_params",
    "track_optimizer_steps",
]

_stepping = None  # a weak reference to the optimizer whose step() is running, if any
_tracking = []


def _step_begins(optimizer, args, kwargs):
    global _stepping
    _stepping = weakref.ref(optimizer)


def _step_ends(optimizer, args, kwargs):
    global _stepping
    _stepping = None


def track_optimizer_steps():
    r"""Installs (once per process) two global optimizer hooks recording which optimizer's
    ``step`` is running, so that :class:`FrozenElements` created *inside* a step -- in the
    closure that ``step(closure)`` calls first, as PyTorch Lightning's automatic optimization
    does -- can save the state that step is about to change."""
    if not _tracking:
        _tracking.append(register_optimizer_step_pre_hook(_step_begins))
        _tracking.append(register_optimizer_step_post_hook(_step_ends))


def trace_params(*traces):
    r"""``{name: tensor}`` of the param sites recorded in ``traces``.

    The tensor is the unconstrained leaf that Pyro's param store optimises; with
    ``module_local_params=True`` (the :class:`~pyro.infer.elbo.ELBOModule` path) it is the value
    the site returned, through which autograd still reaches the module's parameter.

    :param traces: Pyro traces.
    """
    params = {}
    for trace in traces:
        for name, site in trace.nodes.items():
            if site["type"] == "param" and name not in params:
                value = site["value"]
                unconstrained = getattr(value, "unconstrained", None)
                params[name] = unconstrained() if callable(unconstrained) else value
    return params


def split_params(model_traces, guide_traces):
    r"""Splits params into the model group and the guide group.

    A parameter the model reads belongs to the model group even if the guide reads it too (e.g. a
    guide whose variance depends on the decoder's weights); the guide group holds the parameters
    only the guide reads.

    :param model_traces: traces of the model.
    :param guide_traces: traces of the guide.
    """
    model_params = trace_params(*model_traces)
    guide_params = {k: v for k, v in trace_params(*guide_traces).items() if k not in model_params}
    return model_params, guide_params


def hide_params():
    r"""A context manager hiding param sites from outer handlers such as SVI's param capture."""
    return poutine.block(hide_types=["param"])


def expose_params(names):
    r"""Re-emits param sites so that an enclosing ``SVI.step`` steps exactly these parameters.

    :param names: names of parameters in Pyro's param store.
    """
    for name in names:
        pyro.param(name)


def routed(surrogate, params, retain_graph=False):
    r"""A tensor equal to ``surrogate`` whose gradient reaches ``params`` and nothing else.

    :param torch.Tensor surrogate: the objective.
    :param params: the tensors that receive its gradient.
    :param bool retain_graph: keep the graph for further surrogates that share it.
    """
    value, _ = routed_with_grads(surrogate, params, retain_graph)
    return value


def routed_with_grads(surrogate, params, retain_graph):
    r"""Like :func:`routed`, also returning the ``[(param, grad)]`` pairs it routed.

    :param torch.Tensor surrogate: the objective.
    :param params: the tensors that receive its gradient.
    :param bool retain_graph: keep the graph for further surrogates that share it.
    """
    params = [p for p in params if p.requires_grad]
    if not params or not surrogate.requires_grad:
        return surrogate.detach(), []
    grads = torch.autograd.grad(surrogate, params, allow_unused=True, retain_graph=retain_graph)
    pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    if not pairs:
        return surrogate.detach(), []
    proxy = sum((p * g).sum() for p, g in pairs)
    return surrogate.detach() + proxy - proxy.detach(), pairs


class FrozenElements:
    r"""Holds chosen elements of leaf tensors, and their per-element optimizer state, fixed
    through each tensor's next optimizer step (torch's global optimizer step hooks, so it works
    for every ``pyro.optim`` and torch optimizer).

    The tensors and their optimizer state are saved when that step begins or, when the step is
    already running (the gradient is computed in the closure of ``optimizer.step(closure)``,
    see :func:`track_optimizer_steps`), right away. Under data parallelism the elements held
    fixed are those whose gradient *after* the reduction across processes is exactly zero,
    which is the same on every process (a process's own gradient may vanish where another
    process's does not, e.g. on an input that is zero throughout one process's minibatch).

    :param masks: ``[(leaf tensor, boolean mask)]``; ``True`` marks the elements held fixed.
    """

    def __init__(self, masks):
        self._masks = {id(p): (p, m) for p, m in masks}
        self._saved = {}
        self._handles = [
            register_optimizer_step_pre_hook(self._pre),
            register_optimizer_step_post_hook(self._post),
        ]
        running = _stepping() if _stepping is not None else None
        if running is not None:
            self._pre(running, (), {})

    def _owned(self, optimizer):
        for group in optimizer.param_groups:
            for p in group["params"]:
                entry = self._masks.get(id(p))
                if entry is not None and entry[0] is p:
                    yield p, entry[1]

    def _pre(self, optimizer, args, kwargs):
        for p, _ in self._owned(optimizer):
            state = optimizer.state.get(p, {})
            buffers = {
                k: v.detach().clone()
                for k, v in state.items()
                if torch.is_tensor(v) and v.shape == p.shape
            }
            self._saved[id(p)] = (p.detach().clone(), buffers)

    def _post(self, optimizer, args, kwargs):
        with torch.no_grad():
            for p, mask in list(self._owned(optimizer)):
                saved = self._saved.pop(id(p), None)
                if saved is None:
                    continue
                value, buffers = saved
                if world_size() > 1 and p.grad is not None:
                    mask = p.grad == 0  # the reduced gradient: the same mask on every process
                p.copy_(torch.where(mask, value, p))
                state = optimizer.state.get(p, {})
                for k, v in buffers.items():
                    if torch.is_tensor(state.get(k)) and state[k].shape == v.shape:
                        state[k].copy_(torch.where(mask, v, state[k]))
                del self._masks[id(p)]
        if not self._masks:
            self.remove()

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
