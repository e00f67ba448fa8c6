r"""Gibbs–Langevin sampling of a Gaussian–Bernoulli RBM as a kernel (Liao et al. 2022, the sampler
used in "Variational inference with unnormalized priors", Sec. 4.1).

Each transition, from the joint state :math:`(z, h)`:

1. ``langevin_steps`` = :math:`K` Langevin steps on :math:`z` with :math:`h` held fixed, on the
   *conditional* energy :math:`E(z, h)`, whose gradient is :math:`(z - \mu - Wh)/\sigma^2`:
   :math:`z \leftarrow z - \eta (z - \mu - Wh)/\sigma^2 + \sqrt{2\eta}\,\xi`;
2. :math:`h' \sim p(h \mid z')` (Bernoulli);
3. with ``adjust=True``, a Metropolis–Hastings accept of :math:`(z', h')` per chain. Because
   :math:`p(z|h)` is Gaussian, the :math:`K` steps are a linear Gaussian kernel
   :math:`z' \sim \mathcal N(a^K z + (1-a^K)(\mu + Wh), \tau^2)` per unit, with
   :math:`a = 1 - \eta/\sigma^2` and :math:`\tau^2 = 2\eta\sum_{k<K} a^{2k}`; with
   :math:`p(h|z) = e^{-E(z,h) + E(z)}` the acceptance ratio reduces to

   .. math::

       \log\alpha = E(z) - E(z') + \log K_{h'}(z' \to z) - \log K_h(z \to z'),

   with :math:`E(z)` the marginal energy, which makes the chain exact for the GRBM. Without the
   adjustment the stationary law is biased (for one unit, :math:`p(z|h)`'s variance becomes
   :math:`\sigma^2 / (1 - \eta / 2\sigma^2)`).

Unlike the reference implementation the step size is constant (no annealing schedule).
:func:`~pyro_vsm.samplers.block_gibbs` is the limit of exact conditional draws.

References:

[1] `Gaussian-Bernoulli RBMs without tears`,
    Renjie Liao, Simon Kornblith, Mengye Ren, David J. Fleet, Geoffrey Hinton (2022)
"""

from typing import NamedTuple

import torch

from .._checks import positive_int
from ._common import randn, step_size_tensor
from .gibbs import block_gibbs, check_grbm
from .metropolis import metropolis_accept, select

__all__ = [
    "GibbsLangevinSampler",
    "GibbsLangevinState",
    "gibbs_langevin",
    "gibbs_langevin_init",
    "gibbs_langevin_kernel",
]


class GibbsLangevinState(NamedTuple):
    r"""Joint state of Gibbs–Langevin chains.

    :ivar position: visible states ``(..., d)``.
    :ivar hidden: hidden states ``(..., H)``.
    :ivar energy: the marginal energy :math:`E(z)` per chain (``None`` without adjustment).
    """

    position: torch.Tensor
    hidden: torch.Tensor
    energy: torch.Tensor | None


class _Coefficients(NamedTuple):
    eta: torch.Tensor  # Langevin step per visible unit
    variance: torch.Tensor  # sigma^2
    decay: torch.Tensor  # a^K
    tau2: torch.Tensor  # variance of the K-step Gaussian kernel
    noise_scale: torch.Tensor  # sqrt(2 eta)
    langevin_steps: int


def _coefficients(grbm, like, step_size, langevin_steps):
    var = grbm.variance.detach().to(dtype=like.dtype)
    eta = 0.5 * var if step_size is None else step_size_tensor(step_size, like)
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
    powers = torch.arange(langevin_steps, dtype=like.dtype, device=like.device)
    tau2 = 2 * eta * (a.unsqueeze(-1) ** (2 * powers)).sum(-1)
    return _Coefficients(eta, var, a**langevin_steps, tau2, (2 * eta).sqrt(), langevin_steps)


def gibbs_langevin_init(grbm, z, adjust=True, generator=None):
    r"""The joint state at ``z``, with :math:`h \sim p(h|z)`.

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z: visible states ``(..., d)``.
    :param bool adjust: whether the kernel will be Metropolis-adjusted (keeps :math:`E(z)`).
    :param torch.Generator generator: optional source of the draw of :math:`h`.
    :returns: a :class:`GibbsLangevinState`.
    """
    with torch.no_grad():
        h = grbm.sample_hidden(z, generator)
        return GibbsLangevinState(z, h, grbm(z).detach() if adjust else None)


def gibbs_langevin_kernel(state, grbm, coefficients, generator=None):
    r"""One Gibbs–Langevin transition of every chain (adjusted when ``state.energy`` is set).

    :param GibbsLangevinState state: the current state.
    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param coefficients: the step coefficients, as :func:`gibbs_langevin` computes them.
    :param torch.Generator generator: optional source of the draws.
    :returns: ``(state, accept_prob)``; the acceptance probability is one without adjustment.
    """
    z, h, f = state
    c = coefficients
    with torch.no_grad():
        mean = grbm.visible_mean(h)
        z_new = z
        for _ in range(c.langevin_steps):
            z_new = (
                z_new
                - c.eta * (z_new - mean) / c.variance
                + c.noise_scale * randn(z_new, generator)
            )
        h_new = grbm.sample_hidden(z_new, generator)
        if f is None:
            return GibbsLangevinState(z_new, h_new, None), torch.ones_like(z[..., 0])
        f_new = grbm(z_new).detach()
        mean_new = grbm.visible_mean(h_new)
        k = c.decay
        log_forward = -((z_new - k * z - (1 - k) * mean).pow(2) / (2 * c.tau2)).sum(-1)
        log_backward = -((z - k * z_new - (1 - k) * mean_new).pow(2) / (2 * c.tau2)).sum(-1)
        accept_prob, accepted = metropolis_accept(f - f_new + log_backward - log_forward, generator)
        new = select(accepted, GibbsLangevinState(z_new, h_new, f_new), state)
    return new, accept_prob


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
    r"""``num_steps`` Gibbs–Langevin transitions of a GRBM from ``z0`` (with
    :math:`h \sim p(h|z_0)` initially).

    :param grbm: a :class:`~pyro_vsm.distributions.GRBMEnergy`.
    :param torch.Tensor z0: initial visible states ``(..., d)``.
    :param int num_steps: outer (Gibbs) iterations.
    :param step_size: Langevin step :math:`\eta` (float or tensor broadcastable to ``(d,)``);
        default :math:`\sigma^2 / 2` per unit. Must be below :math:`2\sigma_i^2` (stability).
    :param int langevin_steps: :math:`K`.
    :param bool adjust: Metropolis–Hastings correction (exact chain).
    :param torch.Generator generator: optional source of the draws.
    :param bool return_info: also return ``{"hidden": h, "acceptance_rate": ...}`` (the mean
        acceptance probability per chain, ones without ``adjust``).
    :returns: ``z`` (detached), or ``(z, info)``.
    """
    z = check_grbm(grbm, z0)
    num_steps = positive_int(num_steps, "num_steps")
    langevin_steps = positive_int(langevin_steps, "langevin_steps")
    with torch.no_grad():
        coefficients = _coefficients(grbm, z, step_size, langevin_steps)
    state = gibbs_langevin_init(grbm, z, adjust, generator)
    accept_sum = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    for _ in range(num_steps):
        state, accept_prob = gibbs_langevin_kernel(state, grbm, coefficients, generator)
        accept_sum = accept_sum + accept_prob
    z = state.position.detach()
    if not return_info:
        return z
    return z, {"hidden": state.hidden.detach(), "acceptance_rate": accept_sum / num_steps}


class GibbsLangevinSampler:
    r"""``sampler=`` for an :class:`~pyro_vsm.distributions.EnergyDistribution` whose energy is a
    :class:`~pyro_vsm.distributions.GRBMEnergy` (no base): :func:`gibbs_langevin` from
    :math:`\mathcal N(\mu, \sigma^2)`, or :func:`~pyro_vsm.samplers.block_gibbs` with
    ``langevin_steps=None``.

    :param int num_steps: outer (Gibbs) iterations.
    :param step_size: Langevin step (default :math:`\sigma^2/2` per unit).
    :param int langevin_steps: Langevin steps per iteration, or ``None`` for exact block Gibbs.
    :param bool adjust: Metropolis–Hastings correction.
    :param torch.Generator generator: optional source of the draws.
    """

    def __init__(
        self, num_steps, step_size=None, langevin_steps=10, *, adjust=True, generator=None
    ):
        self.num_steps = positive_int(num_steps, "num_steps")
        self.langevin_steps = (
            None if langevin_steps is None else positive_int(langevin_steps, "langevin_steps")
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
