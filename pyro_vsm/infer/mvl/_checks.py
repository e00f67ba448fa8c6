r"""Argument checks shared by the minimum-velocity estimators (one place, one wording)."""

import torch
from pyro.infer.util import is_validation_enabled

from ..._checks import check_positive


def check_inputs(fn, energy, x, step_size, noise=None, generator=None, min_dim=1):
    r"""Checks the arguments every estimator shares and returns ``(x, step_size, noise)``.

    ``x`` comes back detached, ``step_size`` as a float and ``noise`` detached in ``x``'s dtype and
    on its device (or ``None``). The finiteness of ``x`` and ``noise`` is checked only while Pyro's
    validation is enabled (the default; ``pyro.enable_validation(False)`` skips the check and its
    host synchronisation).

    :param str fn: the estimator's name, used in the messages.
    :param energy: must be callable.
    :param torch.Tensor x: data ``[B, d]``, floating point.
    :param step_size: :math:`\epsilon`, a positive finite real number.
    :param noise: ``None`` or a tensor of ``x``'s shape.
    :param generator: ``None`` or a :class:`torch.Generator` (not together with ``noise``).
    :param int min_dim: the least number of coordinates ``d`` of ``x``.
    """
    if not callable(energy):
        raise ValueError(f"{fn}: energy must be callable x[..., d] -> E[...], got {energy!r}")
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[-1] < min_dim or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"{fn}: x must be a floating-point tensor of shape [B, d] with d >= {min_dim}, got {got}"
        )
    step_size = check_positive(step_size, f"{fn}: step_size")
    x = x.detach()
    validate = is_validation_enabled()
    if validate and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: x contains non-finite values (nan or inf)")
    if noise is not None:
        if generator is not None:
            raise ValueError(f"{fn}: pass either noise or generator, not both")
        if not torch.is_tensor(noise) or noise.shape != x.shape or not noise.is_floating_point():
            got = tuple(noise.shape) if torch.is_tensor(noise) else type(noise).__name__
            raise ValueError(
                f"{fn}: noise must be a floating tensor of x's shape {tuple(x.shape)}, got {got}"
            )
        noise = noise.detach().to(dtype=x.dtype, device=x.device)
        if validate and not bool(torch.isfinite(noise).all()):
            raise ValueError(f"{fn}: noise contains non-finite values (nan or inf)")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{fn}: generator must be a torch.Generator, got {generator!r}")
    return x, step_size, noise


def check_energy(fn, e, x):
    r"""``e = energy(x)`` must be a tensor of shape ``x.shape[:-1]``; returns it."""
    if not torch.is_tensor(e) or e.shape != x.shape[:-1]:
        got = tuple(e.shape) if torch.is_tensor(e) else type(e).__name__
        raise ValueError(
            f"{fn}: energy must map x of shape {tuple(x.shape)} to E of shape "
            f"{tuple(x.shape[:-1])}, got {got}"
        )
    return e
