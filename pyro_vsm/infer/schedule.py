"""Alternating updates: which parameter group moves on this step.

``SVI.step`` steps every parameter that the loss touched while it ran (it records them with
``poutine.trace(param_only=True)``) and then zeroes their gradients. Optimizers with momentum (Adam,
ClippedAdam, SGD with momentum) move a parameter even when its gradient is zero, and ClippedAdam's
learning-rate decay ticks for every stepped parameter. To leave a group truly untouched, a loss
therefore computes its objective with parameter sites hidden from SVI, accumulates gradients only
into the active group (``backward(inputs=...)``) and then re-emits exactly the active parameters,
so SVI's optimizer steps those and nothing else.
"""

import pyro
import torch
from pyro import poutine


class AlternatingSchedule:
    """``guide_steps`` guide-only updates followed by one model update, repeated.

    :param int guide_steps: the number ``J`` of guide updates per model update (Algorithm 1 of
        Wenliang, 2022). ``J = 0`` freezes the guide: every step is a model step.
    """

    def __init__(self, guide_steps=1):
        if int(guide_steps) != guide_steps or guide_steps < 0:
            raise ValueError(f"guide_steps must be a non-negative integer, got {guide_steps!r}")
        self.guide_steps = int(guide_steps)
        self.step = 0

    @property
    def phase(self):
        """``"guide"`` or ``"model"``: the kind of update the next step takes."""
        return "guide" if self.step % (self.guide_steps + 1) < self.guide_steps else "model"

    def advance(self):
        self.step += 1

    def state_dict(self):
        return {"step": self.step, "guide_steps": self.guide_steps}

    def load_state_dict(self, state):
        self.guide_steps = int(state["guide_steps"])
        self.step = int(state["step"])


def trace_params(*traces):
    """``{name: tensor}`` of the param sites recorded in ``traces``.

    The tensor is the unconstrained leaf that Pyro's param store optimises; with
    ``module_local_params=True`` (the :class:`~pyro.infer.elbo.ELBOModule` path) it is the value the
    site returned, through which autograd still reaches the module's parameter.
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
    """Splits params into the model group and the guide group.

    A parameter the model reads belongs to the model group even if the guide reads it too
    (e.g. a guide whose variance depends on the decoder's weights); the guide group holds the
    parameters only the guide reads.
    """
    model_params = trace_params(*model_traces)
    guide_params = {k: v for k, v in trace_params(*guide_traces).items() if k not in model_params}
    return model_params, guide_params


def hide_params():
    """Context manager hiding param sites from outer handlers such as SVI's param capture."""
    return poutine.block(hide_types=["param"])


def expose_params(names):
    """Re-emits param sites so that an enclosing ``SVI.step`` steps exactly these parameters."""
    for name in names:
        pyro.param(name)


def backward_into(surrogate, params, retain_graph=None):
    """Accumulates ``d surrogate / d param`` into ``param.grad`` for ``params`` only."""
    inputs = [p for p in params if p.requires_grad]
    if inputs and surrogate.requires_grad:
        surrogate.backward(inputs=inputs, retain_graph=retain_graph)


def routed(surrogate, params, retain_graph=False):
    """A tensor equal to ``surrogate`` whose gradient reaches ``params`` and nothing else.

    Used by ``differentiable_loss`` of alternating losses: a plain torch optimizer then sees
    ``grad is None`` on every parameter outside ``params``. ``retain_graph=True`` keeps the graph
    for further surrogates that share it (one per parameter group).
    """
    params = [p for p in params if p.requires_grad]
    if not params or not surrogate.requires_grad:
        return surrogate.detach()
    grads = torch.autograd.grad(surrogate, params, allow_unused=True, retain_graph=retain_graph)
    proxy = sum((p * g).sum() for p, g in zip(params, grads, strict=True) if g is not None)
    if not torch.is_tensor(proxy):
        return surrogate.detach()
    return surrogate.detach() + proxy - proxy.detach()
