r"""One torch optimizer for all of SVI's parameters.

:class:`pyro.optim.PyroOptim` builds one torch optimizer per parameter tensor and steps them one
after the other. The update is the same as that of one optimizer over all tensors (Adam's
moments and step counts are kept per tensor either way), but every call pays the optimizer's
Python overhead once per tensor: on the small networks of the main job that is about a fifth of
a training step. :class:`ForeachOptim` keeps SVI's contract (``optim(params)`` steps exactly
the tensors it is given, creating state for new ones, with Pyro's ``get_state``/``set_state``
format) but steps them with a single optimizer, with ``foreach=True`` (multi-tensor kernels)
where the optimizer supports it.
"""

import inspect

import pyro
import torch
from pyro.optim import PyroOptim

__all__ = ["ForeachAdam", "ForeachOptim"]


def _group_key(args):
    return tuple(sorted((k, repr(v)) for k, v in args.items()))


class ForeachOptim(PyroOptim):
    r"""A :class:`~pyro.optim.PyroOptim` that steps every parameter with one torch optimizer.

    Drop-in for ``pyro.optim.PyroOptim(constructor, optim_args)`` under
    :class:`~pyro.infer.SVI`: each call ``optim(params)`` updates exactly the tensors in
    ``params`` (others keep their values and optimizer state, as with Pyro's per-tensor
    optimizers, even when they hold a gradient), and per-parameter arguments (a callable
    ``optim_args(param_name)``) put tensors with equal arguments into one parameter group.
    ``get_state`` writes Pyro's per-parameter format, so the states of :class:`ForeachOptim`
    and :class:`~pyro.optim.PyroOptim` load into each other; the hyper-parameters after
    ``set_state`` are those of ``optim_args`` (the moments and step counts come from the state).

    :param optim_constructor: a ``torch.optim.Optimizer`` class (not a learning-rate scheduler).
    :param optim_args: a dict of its arguments, or a callable ``optim_args(param_name)``
        returning one per parameter.
    :param bool foreach: pass ``foreach=True`` (multi-tensor kernels) when the optimizer
        accepts it and ``optim_args`` does not set it.
    """

    def __init__(self, optim_constructor, optim_args, foreach=True):
        if not (
            isinstance(optim_constructor, type)
            and issubclass(optim_constructor, torch.optim.Optimizer)
        ):
            raise TypeError(
                "ForeachOptim: optim_constructor must be a torch.optim.Optimizer class, got "
                f"{optim_constructor!r}"
            )
        super().__init__(optim_constructor, optim_args)
        params = inspect.signature(optim_constructor).parameters
        self._foreach = bool(foreach) and "foreach" in params
        self._optimizer = None
        self._groups = {}  # argument key -> param group

    @property
    def optimizer(self):
        r"""The torch optimizer (``None`` before the first call)."""
        return self._optimizer

    def _args(self, p):
        args = dict(self._get_optim_args(p))
        if self._foreach:
            args.setdefault("foreach", True)
        return args

    def _add(self, p):
        args = self._args(p)
        key = _group_key(args)
        if self._optimizer is None:
            self._optimizer = self.pt_optim_constructor([p], **args)
            self._groups[key] = self._optimizer.param_groups[0]
        elif key in self._groups:
            self._groups[key]["params"].append(p)
        else:
            self._optimizer.add_param_group(dict(args, params=[p]))
            self._groups[key] = self._optimizer.param_groups[-1]
        self.optim_objs[p] = self._optimizer
        self.grad_clip[p] = None
        name = pyro.get_param_store().param_name(p)
        state = self._state_waiting_to_be_consumed.pop(name, None)
        if state is not None:
            # torch's own loading (device, dtype and step-count handling) on a one-tensor twin
            twin = self.pt_optim_constructor([p], **args)
            twin.load_state_dict(state)
            if p in twin.state:
                self._optimizer.state[p] = twin.state[p]

    def __call__(self, params, *args, **kwargs):
        r"""Steps the tensors in ``params`` (an iterable of unconstrained leaves).

        :param params: the tensors to update.
        """
        params = list(params)
        wanted = set(params)
        for p in params:
            if p not in self.optim_objs:
                self._add(p)
        if self._optimizer is None:
            return
        held = [
            (p, p.grad)
            for group in self._optimizer.param_groups
            for p in group["params"]
            if p.grad is not None and p not in wanted
        ]
        for p, _ in held:
            p.grad = None  # torch optimizers skip tensors without a gradient
        try:
            self._optimizer.step(*args, **kwargs)
        finally:
            for p, g in held:
                p.grad = g

    def get_state(self):
        r"""``{param_name: state_dict}`` in :class:`~pyro.optim.PyroOptim`'s per-parameter
        format."""
        store = pyro.get_param_store()
        out = {}
        for group in self._optimizer.param_groups if self._optimizer is not None else []:
            options = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                name = store.param_name(p)
                if name is None:  # removed from the param store since
                    continue
                state = self._optimizer.state.get(p)
                out[name] = {
                    "state": {0: dict(state)} if state else {},
                    "param_groups": [dict(options, params=[0])],
                }
        return out


def ForeachAdam(optim_args):
    r"""``ForeachOptim(torch.optim.Adam, optim_args)``: a drop-in for :class:`pyro.optim.Adam`
    that steps all parameters with one multi-tensor Adam.

    :param optim_args: a dict of ``torch.optim.Adam`` arguments, or a callable
        ``optim_args(param_name)`` returning one per parameter.
    """
    return ForeachOptim(torch.optim.Adam, optim_args)
