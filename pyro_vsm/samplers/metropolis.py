r"""The Metropolis–Hastings decision shared by every adjusted kernel (HMC, MALA, Gibbs–Langevin).

A proposal :math:`x'` from :math:`x` is accepted with probability
:math:`\min(1, e^{\log\alpha})`, where :math:`\log\alpha` is the log target ratio plus the log
proposal-density ratio (zero for HMC, whose leapfrog proposal is volume preserving and reversible).
Each chain decides on its own: ``log_ratio`` has one value per chain, and :func:`select` keeps, per
chain, the proposal or the current value of every part of the state with ``torch.where``.

A proposal whose log ratio is NaN, or that the caller marks invalid (non-finite energy or
gradient), is rejected.
"""

import math

import torch

__all__ = ["metropolis_accept", "select"]


def metropolis_accept(log_ratio, generator=None, valid=None):
    r"""One Metropolis decision per chain.

    :param torch.Tensor log_ratio: :math:`\log\alpha`, one value per chain.
    :param torch.Generator generator: optional source of the uniform draws.
    :param torch.Tensor valid: optional boolean mask (shape of ``log_ratio``); ``False`` rejects.
    :returns: ``(accept_prob, accepted)``: :math:`\min(1, e^{\log\alpha})` (0 where rejected
        for NaN or invalidity) and the boolean decisions, both shaped like ``log_ratio``.
    """
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    if valid is not None:
        log_ratio = log_ratio.masked_fill(~valid, -math.inf)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    u = torch.rand(
        accept_prob.shape, dtype=accept_prob.dtype, device=accept_prob.device, generator=generator
    )
    return accept_prob, u < accept_prob


def select(accepted, new, old):
    r"""Per chain, ``new`` where ``accepted`` else ``old``.

    :param torch.Tensor accepted: boolean decisions, shape ``chains``.
    :param new: a tensor shaped ``(*chains, *event)``, or a tuple/list/dict of them.
    :param old: the same structure as ``new``.
    :returns: the selected structure.
    """
    if isinstance(new, dict):
        return {k: select(accepted, v, old[k]) for k, v in new.items()}
    if isinstance(new, tuple | list):
        parts = [select(accepted, n, o) for n, o in zip(new, old, strict=True)]
        return type(new)(*parts) if hasattr(new, "_fields") else type(new)(parts)
    mask = accepted.reshape(accepted.shape + (1,) * (new.dim() - accepted.dim()))
    return torch.where(mask, new, old)
