"""Batched Langevin samplers for energies :math:`E(z)` and Gibbs samplers for GRBMs.

All samplers run many independent chains at once: ``z0`` has shape ``(*chains, *event)`` and
the energy maps it to per-chain energies of shape ``chains``; the event dims are the trailing
``z0.dim() - E(z0).dim()`` dims (one, ``d``, for the energies of
:mod:`pyro_vsm.distributions.energies`). Gradients are per sample: one backward pass of
:math:`\\sum_c E(z_c)` gives every chain's :math:`\\nabla E(z_c)` because the chains do not
interact (the energy is never averaged over the batch, which would shrink every gradient by the
number of chains). New tensors take ``z0``'s dtype and device; returned tensors are detached.

* :func:`langevin`: unadjusted Langevin (ULA), eq. 13 of "Variational inference with
  unnormalized priors", :math:`z \\leftarrow z - \\eta\\nabla E(z) + \\sqrt{2\\eta}\\,\\xi`,
  :math:`\\xi \\sim \\mathcal N(0, I)`; its stationary law is biased by :math:`O(\\eta)`;
* :func:`mala`: the same proposal with a Metropolis–Hastings accept per chain (exact);
* :func:`block_gibbs`: alternating exact draws :math:`h \\sim p(h|z)`, :math:`z \\sim p(z|h)` of
  a :class:`~pyro_vsm.distributions.GRBMEnergy`;
* :func:`gibbs_langevin`: the Gibbs–Langevin sampler of Liao et al. (2022) for GRBMs: the draw of
  :math:`z` given :math:`h` is replaced by ``langevin_steps`` Langevin steps on the conditional
  energy :math:`E(z, h)`, optionally Metropolis-adjusted on the joint state;
* :class:`LangevinSampler` and :class:`GibbsLangevinSampler`: ``sampler=`` objects for
  :class:`~pyro_vsm.distributions.EnergyDistribution`.
"""

import math

import torch

from .._checks import positive_int as _positive_int

__all__ = [
    "GibbsLangevinSampler",
    "LangevinSampler",
    "block_gibbs",
    "gibbs_langevin",
    "langevin",
    "mala",
]


def _check_z0(z0):
    if not torch.is_tensor(z0) or z0.dim() < 1 or not z0.is_floating_point():
        got = f"shape {tuple(z0.shape)}, dtype {z0.dtype}" if torch.is_tensor(z0) else type(z0)
        raise ValueError(
            f"z0 must be a floating-point tensor of shape (*chains, *event), got {got}"
        )
    return z0.detach()


def _step_size(step_size, like):
    """``step_size`` as a tensor on ``like``'s device/dtype (a float or a broadcastable tensor)."""
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
        raise ValueError(f"step_size must be positive and finite, got {step_size!r}")
    return eta


def _randn(like, generator):
    return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)


def _rand(shape, like, generator):
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)


def _energy_and_grad(energy, z):
    """Per-chain energies (detached) and per-sample gradients :math:`\\nabla E(z)`."""
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


def _per_chain(x, chain_dims):
    """Sums ``x`` over the event dims (all dims after the first ``chain_dims``)."""
    return x.sum(tuple(range(chain_dims, x.dim()))) if x.dim() > chain_dims else x


def _expand_chains(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.dim() - mask.dim()))


def langevin(energy, z0, step_size, num_steps, generator=None):
    """Unadjusted Langevin dynamics,
    :math:`z_{k+1} = z_k - \\eta\\nabla E(z_k) + \\sqrt{2\\eta}\\,\\xi_k`.

    :param energy: callable ``z -> E(z)`` with one value per chain (shape a prefix of ``z``'s).
    :param torch.Tensor z0: initial states ``(*chains, *event)``, e.g. ``(n, d)``.
    :param step_size: :math:`\\eta > 0`, a float or a tensor broadcastable to ``z0`` (a per-dim
        step is a diagonal preconditioner).
    :param int num_steps: number of updates.
    :param torch.Generator generator: optional source of the noise (on ``z0``'s device).
    :returns: the final states, detached, shape of ``z0``.
    """
    z = _check_z0(z0)
    num_steps = _positive_int(num_steps, "num_steps")
    eta = _step_size(step_size, z)
    noise_scale = (2 * eta).sqrt()
    for _ in range(num_steps):
        _, grad = _energy_and_grad(energy, z)
        z = z - eta * grad + noise_scale * _randn(z, generator)
    return z.detach()


def mala(energy, z0, step_size, num_steps, generator=None):
    """Metropolis-adjusted Langevin: the Langevin proposal
    :math:`z' = z - \\eta\\nabla E(z) + \\sqrt{2\\eta}\\,\\xi`, accepted per chain with probability

    .. math::

        \\min\\Big(1, \\exp\\big(E(z) - E(z') + \\log q(z|z') - \\log q(z'|z)\\big)\\Big), \\qquad
        \\log q(z'|z) = -\\frac{\\|z' - z + \\eta\\nabla E(z)\\|^2}{4\\eta} + \\text{const}.

    Proposals with a non-finite energy or gradient are rejected. Arguments as :func:`langevin`.

    :returns: ``(samples, acceptance_rate)``: the final states (detached, shape of ``z0``) and
        each chain's acceptance probability averaged over the steps (shape ``chains``).
    """
    z = _check_z0(z0)
    num_steps = _positive_int(num_steps, "num_steps")
    eta = _step_size(step_size, z)
    noise_scale = (2 * eta).sqrt()
    e, grad = _energy_and_grad(energy, z)
    chain_dims = e.dim()
    accept_sum = torch.zeros_like(e)
    for _ in range(num_steps):
        proposal = z - eta * grad + noise_scale * _randn(z, generator)
        e_new, grad_new = _energy_and_grad(energy, proposal)
        log_forward = -_per_chain((proposal - z + eta * grad).pow(2) / (4 * eta), chain_dims)
        log_backward = -_per_chain((z - proposal + eta * grad_new).pow(2) / (4 * eta), chain_dims)
        log_ratio = e - e_new + log_backward - log_forward
        log_ratio = torch.where(
            torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf), log_ratio
        )
        accept_prob = log_ratio.clamp(max=0.0).exp()
        accept = _rand(accept_prob.shape, z, generator) < accept_prob
        z = torch.where(_expand_chains(accept, z), proposal, z)
        grad = torch.where(_expand_chains(accept, grad), grad_new, grad)
        e = torch.where(accept, e_new, e)
        accept_sum = accept_sum + accept_prob
    return z.detach(), accept_sum / num_steps


def _check_grbm(grbm, z0):
    for attr in ("sample_hidden", "sample_visible", "visible_mean", "variance", "num_visible"):
        if not hasattr(grbm, attr):
            raise ValueError(
                f"grbm must be a GRBMEnergy (or provide {attr}), got {type(grbm).__name__}"
            )
    z = _check_z0(z0)
    if z.shape[-1] != grbm.num_visible:
        raise ValueError(f"z0 must have shape (..., {grbm.num_visible}), got {tuple(z.shape)}")
    return z


def block_gibbs(grbm, z0, num_steps, generator=None, return_hidden=False):
    """Block Gibbs sampling of a GRBM: :math:`h \\sim p(h|z)` (independent Bernoullis), then
    :math:`z \\sim p(z|h) = \\mathcal N(\\mu + Wh, \\operatorname{diag}\\sigma^2)` exactly.

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z0: initial visible states ``(..., d)``.
    :param int num_steps: number of :math:`(h, z)` sweeps.
    :param bool return_hidden: also return the hidden state that generated the last ``z``.
    :returns: ``z`` (detached), or ``(z, h)``.
    """
    z = _check_grbm(grbm, z0)
    num_steps = _positive_int(num_steps, "num_steps")
    with torch.no_grad():
        for _ in range(num_steps):
            h = grbm.sample_hidden(z, generator)
            z = grbm.sample_visible(h, generator)
    return (z, h) if return_hidden else z


def gibbs_langevin(
    grbm,
    z0,
    num_steps,
    step_size=None,
    langevin_steps=10,
    adjust=True,
    generator=None,
    return_info=False,
):
    """Gibbs–Langevin sampling of a GRBM (Liao et al. 2022, "Gaussian-Bernoulli RBMs without
    tears", the sampler used in "Variational inference with unnormalized priors", Sec. 4.1).

    Each of the ``num_steps`` iterations, from the joint state :math:`(z, h)` (with
    :math:`h \\sim p(h|z_0)` initially):

    1. ``langevin_steps`` = :math:`K` Langevin steps on :math:`z` with :math:`h` held fixed, on
       the *conditional* energy :math:`E(z, h)`, whose gradient is
       :math:`(z - \\mu - Wh)/\\sigma^2`:
       :math:`z \\leftarrow z - \\eta (z - \\mu - Wh)/\\sigma^2 + \\sqrt{2\\eta}\\,\\xi`;
    2. :math:`h' \\sim p(h \\mid z')` (Bernoulli);
    3. with ``adjust=True``, a Metropolis–Hastings accept of :math:`(z', h')` per chain. Because
       :math:`p(z|h)` is Gaussian, the :math:`K` steps are a linear Gaussian kernel
       :math:`z' \\sim \\mathcal N(a^K z + (1-a^K)(\\mu + Wh), \\tau^2)` per unit, with
       :math:`a = 1 - \\eta/\\sigma^2` and :math:`\\tau^2 = 2\\eta\\sum_{k<K} a^{2k}`; with
       :math:`p(h|z) = e^{-E(z,h) + E(z)}` the acceptance ratio reduces to

       .. math::

           \\log\\alpha = E(z) - E(z') + \\log K_{h'}(z' \\to z) - \\log K_h(z \\to z'),

       with :math:`E(z)` the marginal energy, which makes the chain exact for the GRBM. Without
       the adjustment the stationary law is biased (for one unit, :math:`p(z|h)`'s variance
       becomes :math:`\\sigma^2 / (1 - \\eta / 2\\sigma^2)`).

    Unlike the reference implementation the step size is constant (no annealing schedule).
    :func:`block_gibbs` is the limit of exact conditional draws.

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z0: initial visible states ``(..., d)``.
    :param int num_steps: outer (Gibbs) iterations.
    :param step_size: Langevin step :math:`\\eta` (float or tensor broadcastable to ``(d,)``);
        default :math:`\\sigma^2 / 2` per unit. Must be below :math:`2\\sigma_i^2` (stability).
    :param int langevin_steps: :math:`K`.
    :param bool adjust: Metropolis–Hastings correction (exact chain).
    :param bool return_info: also return ``{"hidden": h, "acceptance_rate": ...}`` (the mean
        acceptance probability per chain, ones without ``adjust``).
    :returns: ``z`` (detached), or ``(z, info)``.
    """
    z = _check_grbm(grbm, z0)
    num_steps = _positive_int(num_steps, "num_steps")
    langevin_steps = _positive_int(langevin_steps, "langevin_steps")
    with torch.no_grad():
        var = grbm.variance.detach().to(dtype=z.dtype)
        eta = 0.5 * var if step_size is None else _step_size(step_size, z)
        try:
            eta = eta.expand(torch.broadcast_shapes(eta.shape, var.shape))
        except RuntimeError:
            raise ValueError(
                f"step_size must broadcast to ({grbm.num_visible},), got shape {tuple(eta.shape)}"
            ) from None
        a = 1 - eta / var
        if a.device.type != "meta" and not bool((a > -1).all()):
            raise ValueError(
                "step_size must be below 2 sigma^2 for every visible unit (the Langevin steps on "
                f"the Gaussian conditional diverge otherwise); got {step_size!r}"
            )
        powers = torch.arange(langevin_steps, dtype=z.dtype, device=z.device)
        a_k = a**langevin_steps
        tau2 = 2 * eta * (a.unsqueeze(-1) ** (2 * powers)).sum(-1)
        noise_scale = (2 * eta).sqrt()

        h = grbm.sample_hidden(z, generator)
        f = grbm(z).detach() if adjust else None
        accept_sum = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for _ in range(num_steps):
            mean = grbm.visible_mean(h)
            z_new = z
            for _ in range(langevin_steps):
                z_new = z_new - eta * (z_new - mean) / var + noise_scale * _randn(z_new, generator)
            h_new = grbm.sample_hidden(z_new, generator)
            if not adjust:
                z, h = z_new, h_new
                accept_sum = accept_sum + 1
                continue
            f_new = grbm(z_new).detach()
            mean_new = grbm.visible_mean(h_new)
            log_forward = -((z_new - a_k * z - (1 - a_k) * mean).pow(2) / (2 * tau2)).sum(-1)
            log_backward = -((z - a_k * z_new - (1 - a_k) * mean_new).pow(2) / (2 * tau2)).sum(-1)
            log_ratio = f - f_new + log_backward - log_forward
            log_ratio = torch.where(
                torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf), log_ratio
            )
            accept_prob = log_ratio.clamp(max=0.0).exp()
            accept = _rand(accept_prob.shape, z, generator) < accept_prob
            z = torch.where(accept[..., None], z_new, z)
            h = torch.where(accept[..., None], h_new, h)
            f = torch.where(accept, f_new, f)
            accept_sum = accept_sum + accept_prob
    z = z.detach()
    if not return_info:
        return z
    return z, {"hidden": h.detach(), "acceptance_rate": accept_sum / num_steps}


def _reference(target):
    """A tensor with the dtype/device of ``target``'s parameters (energy, then base)."""
    energy = getattr(target, "energy", target)
    if isinstance(energy, torch.nn.Module):
        for t in list(energy.parameters()) + list(energy.buffers()):
            return t.detach()
    base = getattr(target, "base", None)
    if base is not None:
        return base.sample().detach()
    return torch.empty((), dtype=torch.get_default_dtype())


class LangevinSampler:
    """``sampler=`` for :class:`~pyro_vsm.distributions.EnergyDistribution`: ``num_steps`` of
    :func:`langevin` (or :func:`mala` with ``adjusted=True``) on the distribution's potential
    :math:`E(z) - \\log b(z)`, from :math:`\\mathcal N(\\text{init_loc}, \\text{init_scale}^2 I)`.

    Called as ``sampler(target, shape)``, where ``target`` is an ``EnergyDistribution`` or a plain
    energy callable; the chains use the dtype and device of the energy's parameters.
    ``acceptance_rate`` holds the mean acceptance of the last ``adjusted`` call.
    """

    def __init__(
        self,
        step_size,
        num_steps,
        *,
        adjusted=False,
        init_loc=0.0,
        init_scale=1.0,
        generator=None,
    ):
        _step_size(step_size, torch.empty(()))  # validates
        self.step_size = step_size
        self.num_steps = _positive_int(num_steps, "num_steps")
        self.adjusted = bool(adjusted)
        self.init_loc = init_loc
        self.init_scale = init_scale
        self.generator = generator
        self.acceptance_rate = None

    def __call__(self, target, shape):
        potential = getattr(target, "potential", target)
        like = _reference(target)
        eps = torch.randn(
            torch.Size(shape), dtype=like.dtype, device=like.device, generator=self.generator
        )
        z0 = self.init_loc + self.init_scale * eps
        if not self.adjusted:
            return langevin(potential, z0, self.step_size, self.num_steps, self.generator)
        z, acc = mala(potential, z0, self.step_size, self.num_steps, self.generator)
        self.acceptance_rate = acc.mean()
        return z


class GibbsLangevinSampler:
    """``sampler=`` for an :class:`~pyro_vsm.distributions.EnergyDistribution` whose energy is a
    :class:`~pyro_vsm.distributions.GRBMEnergy` (no base): :func:`gibbs_langevin` from
    :math:`\\mathcal N(\\mu, \\sigma^2)`, or :func:`block_gibbs` with ``langevin_steps=None``.
    """

    def __init__(
        self, num_steps, step_size=None, langevin_steps=10, *, adjust=True, generator=None
    ):
        self.num_steps = _positive_int(num_steps, "num_steps")
        self.langevin_steps = (
            None if langevin_steps is None else _positive_int(langevin_steps, "langevin_steps")
        )
        self.step_size = step_size
        self.adjust = bool(adjust)
        self.generator = generator

    def __call__(self, target, shape):
        if getattr(target, "base", None) is not None:
            raise ValueError("GibbsLangevinSampler: the distribution must not have a base")
        grbm = getattr(target, "energy", target)
        like = grbm.mu.detach()
        eps = torch.randn(
            torch.Size(shape), dtype=like.dtype, device=like.device, generator=self.generator
        )
        z0 = grbm.mu.detach() + grbm.sigma.detach() * eps
        if self.langevin_steps is None:
            return block_gibbs(grbm, z0, self.num_steps, self.generator)
        return gibbs_langevin(
            grbm,
            z0,
            self.num_steps,
            step_size=self.step_size,
            langevin_steps=self.langevin_steps,
            adjust=self.adjust,
            generator=self.generator,
        )
