r"""Where a score objective finds the observed data among the guide's arguments.

:math:`\nabla_x \log q(z|x)` needs the guide's data argument: either the very tensor the model
observes, or a tensor that the plate enclosing the observed site subsamples
(``data.index_select(dim, ind)`` with the plate's indices).
"""

import torch
from pyro.infer.util import is_validation_enabled

from ..errors import ScoreObjectiveError

__all__ = ["DataLocator"]


class DataLocator:
    r"""Finds, for each observed site, the guide argument holding its data.

    The result is cached per site name; under Pyro validation the cached relation is re-checked.
    """

    def __init__(self):
        self._cache = {}

    @staticmethod
    def _arg_items(args, kwargs):
        for i, a in enumerate(args):
            if torch.is_tensor(a) and a.is_floating_point():
                yield ("arg", i), a
        for k, a in kwargs.items():
            if torch.is_tensor(a) and a.is_floating_point():
                yield ("kwarg", k), a

    @staticmethod
    def _matches(arg, value, relation, subsamples):
        if relation is None:
            return arg is value or (
                arg.shape == value.shape
                and arg.data_ptr() == value.data_ptr()
                and arg.stride() == value.stride()
            )
        dim, plate = relation
        if plate not in subsamples:
            return False
        idx = subsamples[plate]
        if arg.dim() != value.dim() or idx.numel() != value.shape[dim]:
            return False
        return torch.equal(arg.index_select(dim, idx), value)

    def locate(self, name, site, args, kwargs, subsamples, loss_name):
        r"""Where the data of observed site ``name`` sits among the guide's arguments.

        :param str name: the observed site's name.
        :param dict site: the site in the model's (unpruned) trace.
        :param tuple args: the guide's positional arguments.
        :param dict kwargs: the guide's keyword arguments.
        :param dict subsamples: ``{plate name: indices}`` of the subsampling plates.
        :param str loss_name: the name used in error messages.
        :returns: ``(key, relation)``: ``key`` is ``("arg", index)`` or ``("kwarg", name)``;
            ``relation`` is ``None`` when the argument is the observed tensor itself, else
            ``(dim, plate name)``: the plate subsamples the argument along ``dim``.
        :raises ~pyro_vsm.errors.ScoreObjectiveError: when no argument holds the data.
        """
        value = site["value"]
        items = dict(self._arg_items(args, kwargs))
        cached = self._cache.get(name)
        if cached is not None:
            key, relation = cached
            arg = items.get(key)
            if arg is not None:
                if relation is None:
                    if self._matches(arg, value, None, subsamples):
                        return cached
                elif arg.dim() == value.dim() and (
                    not is_validation_enabled() or self._matches(arg, value, relation, subsamples)
                ):
                    return cached
        event_dim = len(site["fn"].event_shape)
        candidates = [None] + [
            (f.dim - event_dim, f.name)
            for f in site["cond_indep_stack"]
            if f.vectorized and f.name in subsamples and -f.dim + event_dim <= value.dim()
        ]
        for key, arg in items.items():
            for relation in candidates:
                if self._matches(arg, value, relation, subsamples):
                    self._cache[name] = (key, relation)
                    return key, relation
        raise ScoreObjectiveError(
            f"{loss_name}: cannot find the data of observed site '{name}' among the guide's "
            "arguments; score objectives need ∇ₓ log q(z|x), so the guide must receive the observed "
            "tensor itself (or the tensor the enclosing plate subsamples) as an argument"
        )
