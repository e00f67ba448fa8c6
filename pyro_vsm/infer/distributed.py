r"""Reductions across processes for losses trained data-parallel (DDP).

Under data parallelism every process computes its loss on its own minibatch and DDP averages the
gradients, so the parameters stay identical only if every process takes the same phase of the
loss's schedule and holds the same elements fixed. Everything a schedule decides from data is
therefore reduced across processes first: the mean of the per-process values (each process's
minibatch estimate of the same quantity) is the estimate every process acts on.

All functions are no-ops, without any collective or host synchronisation, when
``torch.distributed`` is not initialised or runs a single process. They are collectives
otherwise: every process must call them, in the same order.
"""

import torch
import torch.distributed as dist

__all__ = ["all_gather_rows", "max_over_processes", "mean_over_processes", "world_size"]


def world_size():
    r"""The number of processes of the default process group (1 when ``torch.distributed`` is not
    initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _device():
    # NCCL reduces CUDA tensors only; every other backend reduces CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_processes(values):
    r"""The mean over processes of each value, as floats (one all-reduce for all of them).

    :param values: a number, a scalar tensor, or a ``{name: number or scalar tensor}`` dict.
    """
    is_dict = isinstance(values, dict)
    items = dict(values) if is_dict else {"": values}
    floats = {k: float(v) for k, v in items.items()}
    size = world_size()
    if size > 1 and floats:
        t = torch.tensor(list(floats.values()), dtype=torch.float64, device=_device())
        dist.all_reduce(t)
        floats = dict(zip(floats, (t / size).tolist(), strict=True))
    return floats if is_dict else floats[""]


def max_over_processes(value):
    r"""The largest of the processes' values, as a float (e.g. a status code: did any fail).

    :param float value: this process's value.
    """
    if world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


class _GatherRows(torch.autograd.Function):
    # forward: every process's rows (padded to the same count); backward: the sum over processes
    # of the gradients of this process's rows (an all-reduce, which every backend supports)
    @staticmethod
    def forward(ctx, x, counts):
        ctx.counts, ctx.rank = counts, dist.get_rank()
        most = max(counts)
        padded = x.new_zeros((most,) + tuple(x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:c] for part, c in zip(parts, counts, strict=True)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]], None


def all_gather_rows(x):
    r"""The rows of ``x`` from every process, concatenated in rank order, differentiably.

    The gradient that reaches this process's rows is the sum of the gradients that every process
    sends to them. A quantity every process computes identically from the gathered rows therefore
    gets, once DDP has averaged the gradients, exactly the gradient of that quantity of all rows.
    The processes may hold different numbers of rows. Every process must also run the backward
    pass through the result (it is a collective too).

    :param torch.Tensor x: a tensor of shape ``(n, ...)``.
    """
    size = world_size()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=_device())
    counts = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(counts, n)
    return _GatherRows.apply(x, [int(c) for c in counts])
