r"""Energy functions :math:`E: \mathbb{R}^d \to \mathbb{R}` for energy-based priors.

Every energy is a :class:`torch.nn.Module` that maps ``z`` of shape ``(..., d)`` to ``E(z)`` of
shape ``(...)`` and declares ``event_shape = torch.Size([d])``, the interface read by
:class:`~pyro_vsm.distributions.EnergyDistribution` and
:func:`pyro_vsm.evaluation.log_partition`. The unnormalized density is :math:`e^{-E(z)}`.
Energies that know their log-partition function exactly provide ``log_partition()``; it raises
:class:`NotImplementedError` where the exact value is not available.

* :class:`GRBMEnergy`: the marginal (free) energy of a Gaussian–Bernoulli RBM (eq. 12 of [1], in
  the convention of Liao et al. [2]), with an exact
  log-partition function for few hidden units and the conditionals used by Gibbs sampling;
* :class:`MLPEnergy`: a neural energy with a quadratic confinement term;
* :class:`QuadraticFormEnergy`: :math:`E(z) = z^\top\psi(z)` (minimum velocity learning,
  Wang et al. [3]), with the same confinement;
* :class:`TiltedGaussianEnergy`: an exponentially tilted Gaussian (Pang et al. [4]).

No energy creates tensors on a fixed device: everything is computed from the input and the
module's parameters, so ``.to(device, dtype)`` is all a user needs.

References:

[1] `Variational Inference with Unnormalized Priors`,
    anonymous authors (under double-blind review)

[2] `Gaussian-Bernoulli RBMs Without Tears`,
    Renjie Liao, Simon Kornblith, Mengye Ren, David J. Fleet, Geoffrey Hinton (2022)

[3] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)

[4] `Learning Latent Space Energy-Based Prior Model`,
    Bo Pang, Tian Han, Erik Nijkamp, Song-Chun Zhu, Ying Nian Wu (2020)
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive
from .._checks import positive_int as _positive_int

__all__ = ["GRBMEnergy", "MLPEnergy", "QuadraticFormEnergy", "TiltedGaussianEnergy"]


def _hidden_sizes(hidden):
    sizes = (hidden,) if isinstance(hidden, int) else hidden
    try:
        return tuple(_positive_int(h, "hidden") for h in sizes)
    except (TypeError, ValueError):
        raise ValueError(
            f"hidden must be a sequence of positive integers, got {hidden!r}"
        ) from None


def check_input(z, dim, name="z"):
    r"""Checks that ``z`` is a floating tensor of shape ``(..., dim)``; returns it.

    :param torch.Tensor z: the input of an energy.
    :param int dim: the expected size of the last dimension.
    :param str name: the argument named in the error message.
    :raises ValueError: when ``z`` is not a floating-point tensor of shape ``(..., dim)``.
    """
    if not torch.is_tensor(z):
        raise ValueError(f"{name} must be a tensor of shape (..., {dim}), got {type(z).__name__}")
    if z.dim() < 1 or z.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    return z


def _activation(activation):
    r"""An activation module from a class/factory (``nn.SiLU``) or a module instance."""
    if isinstance(activation, nn.Module):
        return activation
    if callable(activation):
        module = activation()
        if isinstance(module, nn.Module):
            return module
    raise ValueError(
        f"activation must be a torch.nn.Module class or instance (e.g. nn.SiLU), got {activation!r}"
    )


def _mlp(in_dim, hidden, out_dim, activation, dtype=None, device=None):
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h, dtype=dtype, device=device), _activation(activation)]
        d = h
    layers.append(nn.Linear(d, out_dim, dtype=dtype, device=device))
    return nn.Sequential(*layers)


class GRBMEnergy(nn.Module):
    r"""Marginal (free) energy of a Gaussian–Bernoulli restricted Boltzmann machine.

    Joint energy of visible :math:`z \in \mathbb{R}^d` and hidden :math:`h \in \{0,1\}^H`
    (the convention of Liao et al. [2], where the visible units couple to the hidden ones through
    :math:`z/\sigma^2`):

    .. math::

        E(z, h) = \tfrac12 \Big\|\frac{z-\mu}{\sigma}\Big\|^2
                  - \Big(\frac{z}{\sigma^2}\Big)^{\!\top} W h - b^\top h,

    with per-unit mean :math:`\mu` and standard deviation :math:`\sigma` (parametrised by
    :math:`\log\sigma`), weights :math:`W \in \mathbb{R}^{d \times H}` and hidden biases
    :math:`b`. Summing :math:`h` out gives the marginal energy computed by :meth:`forward`
    (eq. 12 of [1]):

    .. math::

        E(z) = \tfrac12 \Big\|\frac{z-\mu}{\sigma}\Big\|^2
               - \sum_{j=1}^H \operatorname{softplus}\Big(\Big(W^\top \frac{z}{\sigma^2}\Big)_j
               + b_j\Big), \qquad e^{-E(z)} = \sum_h e^{-E(z, h)}.

    The conditionals are :math:`p(h_j = 1 \mid z) = \operatorname{sigmoid}((W^\top z/\sigma^2)_j
    + b_j)` and :math:`p(z \mid h) = \mathcal N(\mu + W h, \operatorname{diag}\sigma^2)`.
    (Bao et al. [3] couple :math:`z` instead of :math:`z/\sigma^2`; their partition function
    differs.)

    **Exact log-partition function.** Completing the square for each hidden configuration,

    .. math::

        \log Z = \frac d2 \log 2\pi + \sum_i \log\sigma_i
                  + \operatorname{logsumexp}_{h \in \{0,1\}^H}\Big[b^\top h
                  + \sum_i \frac{(Wh)_i^2 + 2\mu_i (Wh)_i}{2\sigma_i^2}\Big],

    so :math:`p(z)` is a mixture of :math:`2^H` Gaussians :math:`\mathcal N(\mu + Wh,
    \operatorname{diag}\sigma^2)` with the bracket as unnormalised log-weights
    (:meth:`mixture_components`). :meth:`log_partition` sums the :math:`2^H` terms (in chunks,
    differentiably) and raises :class:`NotImplementedError` when ``num_hidden`` exceeds
    :attr:`max_exact_hidden` (20 by default), so that
    :func:`pyro_vsm.evaluation.log_partition` falls back to AIS.

    :param int num_visible: :math:`d`, the dimension of ``z``.
    :param int num_hidden: :math:`H`, the number of binary hidden units.
    :param float weight_scale: standard deviation of the initial weights (default
        :math:`1/\sqrt{d}`); :math:`\mu = 0`, :math:`\sigma = 1`, :math:`b = 0` initially.
    :param float sigma: initial :math:`\sigma` of every visible unit.
    :param torch.dtype dtype: dtype of the parameters (default: torch's default dtype).
    :param torch.device device: device of the parameters.

    References:

    [1] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)

    [2] `Gaussian-Bernoulli RBMs Without Tears`,
        Renjie Liao, Simon Kornblith, Mengye Ren, David J. Fleet, Geoffrey Hinton (2022)

    [3] `Bi-level Score Matching for Learning Energy-based Latent Variable Models`,
        Fan Bao, Chongxuan Li, Kun Xu, Hang Su, Jun Zhu, Bo Zhang (2020)
    """

    #: the largest ``num_hidden`` for which :meth:`log_partition` enumerates all states
    max_exact_hidden = 20
    #: hidden configurations evaluated at once by :meth:`log_partition`
    chunk_size = 2**14

    def __init__(
        self, num_visible, num_hidden, *, weight_scale=None, sigma=1.0, dtype=None, device=None
    ):
        super().__init__()
        self.num_visible = _positive_int(num_visible, "num_visible")
        self.num_hidden = _positive_int(num_hidden, "num_hidden")
        if weight_scale is None:
            weight_scale = 1.0 / math.sqrt(num_visible)
        check_positive(weight_scale, "weight_scale", allow_zero=True)
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        kw = dict(dtype=dtype, device=device)
        self.mu = nn.Parameter(torch.zeros(num_visible, **kw))
        self.log_sigma = nn.Parameter(torch.full((num_visible,), math.log(float(sigma)), **kw))
        self.W = nn.Parameter(torch.randn(num_visible, num_hidden, **kw) * weight_scale)
        self.b = nn.Parameter(torch.zeros(num_hidden, **kw))
        self.event_shape = torch.Size([num_visible])

    # ---- parameters ----
    @property
    def sigma(self):
        r""":math:`\sigma`, shape ``(d,)``."""
        return self.log_sigma.exp()

    @property
    def variance(self):
        r""":math:`\sigma^2`, shape ``(d,)``."""
        return (2 * self.log_sigma).exp()

    # ---- energies ----
    def forward(self, z):
        r"""Marginal energy :math:`E(z)`, shape ``z.shape[:-1]``.

        :param torch.Tensor z: visible values, shape ``(..., d)``.
        """
        z = check_input(z, self.num_visible)
        var = self.variance
        quadratic = 0.5 * ((z - self.mu).pow(2) / var).sum(-1)
        return quadratic - F.softplus(self.hidden_logits(z)).sum(-1)

    def joint_energy(self, z, h):
        r""":math:`E(z, h)` for visible ``z`` ``(..., d)`` and hidden ``h`` ``(..., H)``.

        :param torch.Tensor z: visible values, shape ``(..., d)``.
        :param torch.Tensor h: hidden values, shape ``(..., H)``.
        """
        z = check_input(z, self.num_visible)
        h = check_input(h, self.num_hidden, "h")
        var = self.variance
        quadratic = 0.5 * ((z - self.mu).pow(2) / var).sum(-1)
        return quadratic - (((z / var) @ self.W) * h).sum(-1) - (h * self.b).sum(-1)

    # ---- conditionals (block Gibbs, Gibbs-Langevin) ----
    def hidden_logits(self, z):
        r"""Logits of :math:`p(h_j = 1 \mid z)`: :math:`W^\top z/\sigma^2 + b`, ``(..., H)``.

        :param torch.Tensor z: visible values, shape ``(..., d)``.
        """
        z = check_input(z, self.num_visible)
        return (z / self.variance) @ self.W + self.b

    def visible_mean(self, h):
        r"""Mean :math:`\mu + W h` of :math:`p(z \mid h)`, shape ``(..., d)``.

        :param torch.Tensor h: hidden values, shape ``(..., H)``.
        """
        h = check_input(h, self.num_hidden, "h")
        return self.mu + h @ self.W.T

    def sample_hidden(self, z, generator=None):
        r"""A draw :math:`h \sim p(h \mid z)` (0/1 values in ``z``'s dtype), ``(..., H)``.

        :param torch.Tensor z: visible values, shape ``(..., d)``.
        :param torch.Generator generator: optional generator for the uniforms.
        """
        probs = torch.sigmoid(self.hidden_logits(z))
        u = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
        return (u < probs).to(probs.dtype)

    def sample_visible(self, h, generator=None):
        r"""A draw :math:`z \sim p(z \mid h) = \mathcal N(\mu + Wh, \operatorname{diag}\sigma^2)`.

        :param torch.Tensor h: hidden values, shape ``(..., H)``.
        :param torch.Generator generator: optional generator for the normal draws.
        """
        mean = self.visible_mean(h)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + self.sigma * eps

    # ---- exact normalisation for small H ----
    def _check_enumerable(self):
        if self.num_hidden > self.max_exact_hidden:
            raise NotImplementedError(
                f"GRBMEnergy.log_partition: exact enumeration of 2^{self.num_hidden} hidden states "
                f"is limited to num_hidden <= max_exact_hidden = {self.max_exact_hidden}; "
                "use pyro_vsm.evaluation.log_partition(energy, method='ais')"
            )

    def hidden_states(self, start=0, stop=None):
        r"""Hidden configurations number ``start`` to ``stop - 1`` (binary digits), ``(n, H)``.

        :param int start: the first configuration.
        :param int stop: one past the last configuration (default :math:`2^H`).
        """
        stop = 2**self.num_hidden if stop is None else stop
        idx = torch.arange(start, stop, device=self.W.device)
        bits = torch.arange(self.num_hidden, device=self.W.device)
        return ((idx[:, None] >> bits) & 1).to(self.W.dtype)

    def _mixture_log_weights(self, h):
        shift = h @ self.W.T  # (n, d): W h
        var = self.variance
        return h @ self.b + ((0.5 * shift.pow(2) + self.mu * shift) / var).sum(-1), shift

    def log_partition(self):
        r"""Exact :math:`\log Z = \log\int e^{-E(z)} dz` (differentiable in the parameters).

        :raises NotImplementedError: when ``num_hidden > max_exact_hidden``.
        """
        self._check_enumerable()
        total = 2**self.num_hidden
        parts = []
        for start in range(0, total, self.chunk_size):
            h = self.hidden_states(start, min(start + self.chunk_size, total))
            parts.append(torch.logsumexp(self._mixture_log_weights(h)[0], 0))
        log_sum = torch.logsumexp(torch.stack(parts), 0)
        d = self.num_visible
        return 0.5 * d * math.log(2 * math.pi) + self.log_sigma.sum() + log_sum

    def mixture_components(self):
        r""":math:`p(z)` as the mixture :math:`\sum_h \pi_h \mathcal N(\mu + Wh,
        \operatorname{diag}\sigma^2)`.

        :returns: ``(log_weights (2^H,), means (2^H, d), scale (d,))``, the log-weights
            normalised; row ``k`` belongs to the hidden state ``hidden_states()[k]``.
        :raises NotImplementedError: when ``num_hidden > max_exact_hidden``.
        """
        self._check_enumerable()
        h = self.hidden_states()
        log_w, shift = self._mixture_log_weights(h)
        return log_w - torch.logsumexp(log_w, 0), self.mu + shift, self.sigma

    def extra_repr(self):
        return f"num_visible={self.num_visible}, num_hidden={self.num_hidden}"


class MLPEnergy(nn.Module):
    r"""A neural energy with a quadratic confinement term:

    .. math::

        E(z) = f_\theta(z) + \tfrac{\lambda}{2}\|z\|^2,

    where :math:`f_\theta: \mathbb{R}^d \to \mathbb{R}` is an MLP with a linear output layer.
    With a Lipschitz activation (SiLU, softplus, tanh, ELU...) :math:`|f_\theta(z)| \le a +
    L\|z\|` grows at most linearly, so any :math:`\lambda > 0` makes :math:`e^{-E}` integrable:
    the prior is always normalisable (with ``confinement=0`` it generally is not). Use a smooth
    activation when the energy is trained by score matching, which differentiates it twice
    (ReLU networks have a zero Hessian almost everywhere).

    :param int dim: :math:`d`.
    :param hidden: widths of the hidden layers.
    :param activation: a ``torch.nn.Module`` class (instantiated per layer) or instance.
    :param float confinement: :math:`\lambda \ge 0` (default 0.01, a wide Gaussian envelope of
        standard deviation 10).
    :param torch.dtype dtype: dtype of the parameters (default: torch's default dtype).
    :param torch.device device: device of the parameters.
    """

    def __init__(
        self,
        dim,
        hidden=(64, 64),
        activation=nn.SiLU,
        confinement=0.01,
        *,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.confinement = check_positive(confinement, "confinement", allow_zero=True)
        self.net = _mlp(dim, _hidden_sizes(hidden), 1, activation, dtype, device)
        self.event_shape = torch.Size([dim])

    def forward(self, z):
        r""":math:`E(z)`, shape ``z.shape[:-1]``.

        :param torch.Tensor z: points, shape ``(..., d)``.
        """
        z = check_input(z, self.dim)
        return self.net(z).squeeze(-1) + 0.5 * self.confinement * z.pow(2).sum(-1)

    def extra_repr(self):
        return f"dim={self.dim}, confinement={self.confinement}"


class QuadraticFormEnergy(nn.Module):
    r""":math:`E(z) = z^\top \psi_\theta(z) + \tfrac{\lambda}{2}\|z\|^2` with
    :math:`\psi_\theta: \mathbb{R}^d \to \mathbb{R}^d` an MLP.

    The quadratic-form parametrisation used with minimum velocity learning (Wang et al. [1]):
    :math:`E(0) = 0` anchors the energy and a linear
    :math:`\psi` gives any quadratic energy. The default activation ``tanh`` keeps
    :math:`\psi_\theta` bounded, so :math:`|z^\top\psi_\theta(z)|` grows at most linearly and
    ``confinement`` :math:`\lambda > 0` guarantees a normalisable density. With an unbounded
    activation (SiLU, ELU) :math:`z^\top\psi_\theta(z)` can grow quadratically with either
    sign and normalisability is no longer guaranteed.

    :param int dim: :math:`d`.
    :param hidden: widths of the hidden layers of :math:`\psi_\theta`.
    :param activation: a ``torch.nn.Module`` class or instance (default ``nn.Tanh``).
    :param float confinement: :math:`\lambda \ge 0` (default 0.01).
    :param bool spectral_norm: spectral normalisation (Miyato et al. 2018) of the layers that
        produce the hidden units (all but the output layer), as in Wang et al.'s experiments
        (``torch.nn.utils.parametrizations.spectral_norm``: one power iteration per forward pass
        in training mode; inside ``torch.nn.utils.parametrize.cached()`` the normalised weights
        are computed once, so that several evaluations of the energy see the same function).
    :param torch.dtype dtype: dtype of the parameters (default: torch's default dtype).
    :param torch.device device: device of the parameters.

    References:

    [1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
        Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
    """

    def __init__(
        self,
        dim,
        hidden=(64, 64),
        activation=nn.Tanh,
        confinement=0.01,
        *,
        spectral_norm=False,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.confinement = check_positive(confinement, "confinement", allow_zero=True)
        if not isinstance(spectral_norm, bool):
            raise ValueError(f"spectral_norm must be True or False, got {spectral_norm!r}")
        self.psi = _mlp(dim, _hidden_sizes(hidden), dim, activation, dtype, device)
        if spectral_norm:
            linears = [m for m in self.psi if isinstance(m, nn.Linear)]
            for layer in linears[:-1]:
                nn.utils.parametrizations.spectral_norm(layer)
        self.spectral_norm = spectral_norm
        self.event_shape = torch.Size([dim])

    def forward(self, z):
        r""":math:`E(z)`, shape ``z.shape[:-1]``.

        :param torch.Tensor z: points, shape ``(..., d)``.
        """
        z = check_input(z, self.dim)
        return (z * self.psi(z)).sum(-1) + 0.5 * self.confinement * z.pow(2).sum(-1)

    def extra_repr(self):
        sn = ", spectral_norm=True" if self.spectral_norm else ""
        return f"dim={self.dim}, confinement={self.confinement}{sn}"


class TiltedGaussianEnergy(nn.Module):
    r"""An exponentially tilted Gaussian (Pang et al. [1]):

    .. math::

        E(z) = \frac{\|z\|^2}{2 s^2} - f_\theta(z), \qquad
        p(z) \propto e^{f_\theta(z)}\, \mathcal N(z; 0, s^2 I),

    with :math:`f_\theta` an MLP with a linear output. Its last layer starts at zero, so the
    prior starts as exactly :math:`\mathcal N(0, s^2 I)` (a standard VAE prior for ``s = 1``)
    and :math:`\log Z = \frac d2\log(2\pi s^2)` there. With a Lipschitz activation
    :math:`f_\theta` grows at most linearly and the density is always normalisable. The same
    prior can be written ``EnergyDistribution(energy=lambda z: -tilt(z), base=Normal(0, s))``;
    this class keeps the Gaussian in the energy so that the energy alone defines the prior.

    :param int dim: :math:`d`.
    :param hidden: widths of the hidden layers of :math:`f_\theta`.
    :param activation: a ``torch.nn.Module`` class or instance (default ``nn.SiLU``).
    :param float base_scale: :math:`s > 0`.
    :param torch.dtype dtype: dtype of the parameters (default: torch's default dtype).
    :param torch.device device: device of the parameters.

    References:

    [1] `Learning Latent Space Energy-Based Prior Model`,
        Bo Pang, Tian Han, Erik Nijkamp, Song-Chun Zhu, Ying Nian Wu (2020)
    """

    def __init__(
        self,
        dim,
        hidden=(64, 64),
        activation=nn.SiLU,
        base_scale=1.0,
        *,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        if not float(base_scale) > 0:
            raise ValueError(f"base_scale must be positive, got {base_scale!r}")
        self.base_scale = float(base_scale)
        self.net = _mlp(dim, _hidden_sizes(hidden), 1, activation, dtype, device)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.event_shape = torch.Size([dim])

    def tilt(self, z):
        r""":math:`f_\theta(z)`, shape ``z.shape[:-1]``.

        :param torch.Tensor z: points, shape ``(..., d)``.
        """
        z = check_input(z, self.dim)
        return self.net(z).squeeze(-1)

    def forward(self, z):
        r""":math:`E(z)`, shape ``z.shape[:-1]``.

        :param torch.Tensor z: points, shape ``(..., d)``.
        """
        z = check_input(z, self.dim)
        return 0.5 * z.pow(2).sum(-1) / self.base_scale**2 - self.net(z).squeeze(-1)

    def extra_repr(self):
        return f"dim={self.dim}, base_scale={self.base_scale}"
