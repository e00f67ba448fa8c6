r"""Tracing a potential function once into a graph of tensor operations.

An AIS run evaluates the potential of a Pyro model and its gradient thousands of times on tensors
of the same shapes. :func:`trace_function` records the operations of one evaluation (the model's
code, Pyro's handlers and the backward pass alike reduce to a few dozen ATen operations) with
:func:`torch.fx.experimental.proxy_tensor.make_fx` on fake tensors, removes the operations that
do nothing (views to the same shape, additions of zero, ...), precomputes the parts that depend
only on constants (parameters, data), and returns the graph. Tracing with fake tensors fails on
computation whose control flow depends on tensor values, and the graph is checked against the
function once on real inputs; in either failure the caller keeps the function itself.
"""

import warnings

import torch

__all__ = ["trace_function"]

_aten = torch.ops.aten
_VIEWS = {
    _aten.view.default,
    _aten._unsafe_view.default,
    _aten.reshape.default,
    _aten.expand.default,
    _aten.alias.default,
    _aten.detach.default,
    _aten.clone.default,
}
_ZERO_SCALAR = {_aten.add.Tensor, _aten.sub.Tensor}
_ONE_SCALAR = {_aten.mul.Tensor, _aten.div.Tensor, _aten.pow.Tensor_Scalar}
_LIKE = {_aten.zeros_like.default: 0.0, _aten.ones_like.default: 1.0}


def _val(node):
    v = node.meta.get("val") if hasattr(node, "meta") else None
    return v if torch.is_tensor(v) else None


def _same(a, b):
    va, vb = _val(a), _val(b)
    return (
        va is not None
        and vb is not None
        and va.shape == vb.shape
        and va.dtype == vb.dtype
        and va.stride() == vb.stride()
    )


def _is_identity(node):
    if node.op != "call_function" or not node.args or not hasattr(node.args[0], "op"):
        return False
    src, t = node.args[0], node.target
    if t in _VIEWS or (t is _aten.permute.default and list(node.args[1]) == sorted(node.args[1])):
        return _same(node, src)
    if len(node.args) == 2 and isinstance(node.args[1], int | float) and not node.kwargs:
        if (t in _ZERO_SCALAR and node.args[1] == 0) or (t in _ONE_SCALAR and node.args[1] == 1):
            return _same(node, src)
    return False


def _simplify(gm):
    graph = gm.graph
    for node in list(graph.nodes):
        if _is_identity(node):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.op == "call_function" and node.target in _LIKE and _val(node) is not None:
            v = _val(node)
            with graph.inserting_before(node):
                full = graph.call_function(
                    _aten.full.default,
                    (list(v.shape), _LIKE[node.target]),
                    {"dtype": v.dtype, "device": v.device},
                )
            full.meta["val"] = v
            node.replace_all_uses_with(full)
            graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _fold_constants(gm):
    r"""Evaluates once every operation that depends only on constants (parameters, data) and
    stores the results as attributes of ``gm``."""
    graph, env = gm.graph, {}
    for node in graph.nodes:
        if node.op == "get_attr":
            value = gm
            for part in node.target.split("."):
                value = getattr(value, part)
            env[node] = value
        elif node.op == "call_function" and all(n in env for n in node.all_input_nodes):
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
            env[node] = node.target(*args, **kwargs)
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node not in env or not torch.is_tensor(env[node]):
            continue
        if all(user in env for user in node.users):
            continue
        name = f"_pyro_vsm_folded_{folded}"
        folded += 1
        setattr(gm, name, env[node])
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _pure(gm):
    for node in gm.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if torch.Tag.nondeterministic_seeded in node.target.tags or node.target._schema.is_mutable:
            return False
    return True


def _close(a, b):
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape:
        return False
    scale = b.abs().nan_to_num(0.0, 0.0, 0.0).max().clamp(min=1.0)
    tol = 1e-4 if a.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    return bool(torch.isclose(a, b, rtol=tol, atol=tol * float(scale), equal_nan=True).all())


def trace_function(fn, *args):
    r"""A graph computing ``fn(*args)`` for tensors of the shapes of ``args``, or ``None``.

    :param fn: a function of tensors returning a tuple of tensors; it must not draw random
        numbers or change tensors in place.
    :param args: example inputs (real tensors); the graph is checked against ``fn`` on them.
    :returns: the traced and simplified :class:`torch.fx.GraphModule`, or ``None`` when ``fn``
        cannot be traced (value-dependent control flow, random draws, in-place updates) or the
        graph disagrees with it.
    """
    try:
        from torch.fx.experimental.proxy_tensor import make_fx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
            if not _pure(gm):
                return None
            gm = _fold_constants(_simplify(gm))
            traced = gm(*args)
        expected = fn(*args)
    except Exception:  # any failure to trace: the caller keeps fn
        return None
    if len(traced) != len(expected) or not all(map(_close, traced, expected)):
        return None
    return gm
