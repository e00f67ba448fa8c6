r"""Tensor helpers shared by the sampler kernels (argument checks, noise, per-chain gradients).

Chains are batched: a state has shape ``(*chains, *event)`` and an energy maps it to one value
per chain, shape ``chains``. New tensors take the dtype and device of the state.
"""

import math

import torch


def check_z0(z0):
    r"""``z0`` detached, or ``ValueError`` naming ``z0`` when it is not a floating tensor."""
    if not torch.is_tensor(z0) or z0.dim() < 1 or not z0.is_floating_point():
        got = f"shape {tuple(z0.shape)}, dtype {z0.dtype}" if torch.is_tensor(z0) else type(z0)
        raise ValueError(
            f"z0 must be a floating-point tensor of shape (*chains, *event), got {got}"
        )
    return z0.detach()


def step_size_tensor(step_size, like, name="step_size"):
    r"""``step_size`` as a tensor on ``like``'s device/dtype (a float or a broadcastable tensor);
    ``ValueError`` naming the argument unless every value is positive and finite."""
    if isinstance(step_size, bool):
        raise ValueError(f"{name} must be a positive number, got {step_size!r}")
    if torch.is_tensor(step_size):
        eta = step_size.detach().to(dtype=like.dtype, device=like.device)
        checked = eta if eta.device.type != "meta" else None  # meta tensors hold no values
    else:
        try:
            value = float(step_size)
        except (TypeError, ValueError):
            value = math.nan
        checked = torch.tensor(value)
        eta = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if checked is not None and not bool(((checked > 0) & torch.isfinite(checked)).all()):
        raise ValueError(f"{name} must be positive and finite, got {step_size!r}")
    return eta


def randn(like, generator=None):
    return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)


def rand(shape, like, generator=None):
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)


def energy_and_grad(energy, z):
    r"""Per-chain energies (detached) and per-sample gradients :math:`\nabla E(z)`: one backward
    pass of :math:`\sum_c E(z_c)`, since the chains do not interact."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        e = energy(z)
        if not torch.is_tensor(e) or e.dim() >= z.dim() or e.shape != z.shape[: e.dim()]:
            got = tuple(e.shape) if torch.is_tensor(e) else type(e).__name__
            raise ValueError(
                f"the energy returned {got} for z of shape {tuple(z.shape)}; expected one value "
                "per chain, a shape that is a strict prefix of z's (e.g. (n,) for z of shape "
                "(n, d))"
            )
        (grad,) = torch.autograd.grad(e.sum(), z, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(z)
    return e.detach(), grad.detach()


def per_chain(x, chain_dims):
    r"""Sums ``x`` over its event dims (all dims after the first ``chain_dims``)."""
    return x.sum(tuple(range(chain_dims, x.dim()))) if x.dim() > chain_dims else x


def expand_chains(mask, like):
    r"""``mask`` (shape ``chains``) with trailing singleton dims to broadcast against ``like``."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - mask.dim()))
