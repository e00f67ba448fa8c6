r"""Distributions on the unit sphere :math:`S^{p-1} \subset \mathbb R^p`, in any dimension.

Densities are with respect to the surface (Hausdorff) measure of the sphere, and points have
shape ``(..., p)``; both classes declare ``support = constraints.sphere`` (Pyro's constraint).

* :class:`HypersphericalUniform` ``(dim)``: the uniform distribution on :math:`S^{\text{dim}}`,
  whose points have ``dim + 1`` coordinates. ``dim`` is the sphere's own dimension, as in the
  ``hyperspherical_vae`` (s-vae) package: ``HypersphericalUniform(2)`` is uniform on the ordinary
  sphere in :math:`\mathbb R^3`.
* :class:`VonMisesFisher` ``(loc, concentration)``: the density
  :math:`C_p(\kappa)\,e^{\kappa\mu^\top x}` with :math:`\lVert\mu\rVert = 1`, :math:`\kappa \ge 0`
  and :math:`p` = ``loc.shape[-1]`` (the ambient dimension; the sphere is :math:`S^{p-1}`).

A KL divergence from :class:`VonMisesFisher` to :class:`HypersphericalUniform` is registered
with :func:`torch.distributions.kl.register_kl` (so ``TraceMeanField_ELBO`` uses it).

**Normaliser.** With :math:`\nu = p/2 - 1`,

.. math::

    \log C_p(\kappa) = \nu\log\kappa - \tfrac p2\log(2\pi) - \log I_\nu(\kappa)
                     = -F_\nu(\kappa) - \tfrac p2\log(2\pi), \qquad
    F_\nu(\kappa) = \log\frac{I_\nu(\kappa)}{\kappa^\nu},

computed by :func:`pyro_vsm.ops.log_bessel_iv_div_pow` in pure torch (series, Hankel and Debye
expansions; no host round trip), finite at :math:`\kappa = 0` (the uniform distribution) and
accurate to about :math:`10^{-13}` relative in float64 up to :math:`\kappa = 10^4` and beyond.
Its derivative is exact by construction: :math:`\partial_\kappa\log C_p = -A_p(\kappa)`, with the
mean resultant length :math:`A_p(\kappa) = I_{p/2}(\kappa)/I_{p/2-1}(\kappa) = \mathbb
E[\mu^\top x]` (:func:`pyro_vsm.ops.bessel_iv_ratio`). Hence ``mean`` :math:`= A_p\mu`,
``entropy`` :math:`= -\log C_p - \kappa A_p`, and
:math:`\mathrm{KL}(\mathrm{vMF}\,\|\,\mathrm{Unif}) = \log C_p + \kappa A_p + \log|S^{p-1}|`.

**Sampling** (Wood [1]): the component :math:`w = \mu^\top x` is drawn by rejection from the
proposal :math:`w = h(\varepsilon, \kappa) = \frac{1 - (1+b)\varepsilon}{1 - (1-b)\varepsilon}`,
:math:`\varepsilon \sim \mathrm{Beta}(\frac{p-1}2, \frac{p-1}2)`, :math:`b = \frac{p -
1}{2\kappa + \sqrt{4\kappa^2 + (p-1)^2}}`; then :math:`x = w\mu + \sqrt{1 - w^2}\,v` with
:math:`v` uniform on the unit sphere of :math:`\mu^\perp`, realised by a Householder map of
:math:`e_1` to :math:`\mu`. All chains are proposed together; the loop runs until every one has
accepted (one host synchronisation per round; the acceptance rate is high, above 0.5 for all
:math:`p` and :math:`\kappa`, so a handful of rounds).

**Gradients** (Naesseth et al. [2]; Davidson et al. [3]). :meth:`VonMisesFisher.rsample` is
differentiable in ``loc`` and ``concentration`` through :math:`x = T_\mu(h(\varepsilon, \kappa), v)`
with the accepted :math:`\varepsilon` held fixed. That pathwise term :math:`g_{\mathrm{rep}}` alone
is **biased** for :math:`\kappa`: the accepted :math:`\varepsilon` has density
:math:`\pi(\varepsilon; \kappa) = s(\varepsilon)\,q(h(\varepsilon, \kappa); \kappa)/r(h(\varepsilon,
\kappa); \kappa)` (:math:`q` the density of :math:`w`, :math:`r` the proposal's), which depends on
:math:`\kappa`. The exact gradient adds the score term :math:`g_{\mathrm{cor}} = \mathbb
E[f(x)\,\nabla_\kappa\log\frac{q(h(\varepsilon, \kappa);\kappa)}{r(h(\varepsilon,\kappa);\kappa)}]`.
:meth:`VonMisesFisher.score_parts` returns that log-ratio as its ``score_function`` for the last
value drawn by :meth:`VonMisesFisher.rsample`, so Pyro's ``Trace_ELBO`` (and every ELBO that uses
score parts) adds :math:`g_{\mathrm{cor}}` by itself, as for Pyro's own ``Rejector``. In plain torch
use the surrogate

.. code-block:: python

    x = vmf.rsample()
    f = objective(x)
    surrogate = f + f.detach() * vmf.score_parts(x).score_function   # gradient = g_rep + g_cor

(The correction does not survive ``mask(bool)``, which Pyro implements without score parts.)

References:

[1] `Simulation of the von Mises Fisher distribution`,
    Andrew T. A. Wood (1994)

[2] `Reparameterization Gradients through Acceptance-Rejection Sampling Algorithms`,
    Christian A. Naesseth, Francisco J. R. Ruiz, Scott W. Linderman, David M. Blei (2017)

[3] `Hyperspherical Variational Auto-Encoders`,
    Tim R. Davidson, Luca Falorsi, Nicola De Cao, Thomas Kipf, Jakub M. Tomczak (2018)
"""

import math
import numbers

import torch
from pyro.distributions import constraints
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import kl

from ..ops.bessel import bessel_iv_ratio, log_bessel_iv_div_pow
from ..ops.sphere import log_sphere_area

__all__ = ["HypersphericalUniform", "VonMisesFisher", "vmf_log_normalizer"]

_MAX_REJECTION_ROUNDS = 1000


def vmf_log_normalizer(p, concentration):
    r""":math:`\log C_p(\kappa) = -\log\frac{I_{p/2-1}(\kappa)}{\kappa^{p/2-1}} - \frac p2
    \log(2\pi)`, the log normaliser of the von Mises--Fisher density on :math:`S^{p-1}`
    (elementwise, differentiable, :math:`\partial_\kappa\log C_p = -A_p(\kappa)`).

    :param int p: the ambient dimension :math:`p \ge 2`.
    :param torch.Tensor concentration: :math:`\kappa \ge 0`, any shape.
    :returns: :math:`\log C_p(\kappa)`, the shape of ``concentration``.
    """
    return -log_bessel_iv_div_pow(0.5 * p - 1, concentration) - 0.5 * p * math.log(2 * math.pi)


class HypersphericalUniform(TorchDistribution):
    r"""The uniform distribution on :math:`S^{\text{dim}} \subset \mathbb R^{\text{dim}+1}`, with
    density :math:`1/|S^{\text{dim}}|` with respect to the surface measure.

    ``dim`` is the dimension of the sphere (the s-vae convention): the event shape is
    ``(dim + 1,)``. Samples are normalised standard Gaussians (reparametrised; there are no
    parameters). The batch shape is ``()`` unless ``batch_shape`` is given; :meth:`expand` gives
    any batch shape, so the distribution works inside ``pyro.plate``.

    :param int dim: the sphere's dimension :math:`n \ge 1`.
    :param batch_shape: optional batch shape.
    :param torch.dtype dtype: dtype of samples and log-densities (default: torch's default).
    :param device: device of samples and log-densities (default: CPU).
    :param validate_args: as for torch distributions.
    """

    arg_constraints = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, dim, batch_shape=(), *, dtype=None, device=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(
                f"dim must be a positive integer (the sphere's dimension n; points have n + 1 "
                f"coordinates), got {dim!r}"
            )
        self._dim = int(dim)
        self._dtype = torch.get_default_dtype() if dtype is None else dtype
        self._device = torch.device("cpu") if device is None else torch.device(device)
        super().__init__(
            torch.Size(batch_shape), torch.Size([self._dim + 1]), validate_args=validate_args
        )

    @property
    def dim(self):
        r"""The sphere's dimension :math:`n` (points have :math:`n + 1` coordinates)."""
        return self._dim

    def expand(self, batch_shape, _instance=None):
        r"""The same distribution with batch shape ``batch_shape``.

        :param batch_shape: the new batch shape.
        """
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new._dim, new._dtype, new._device = self._dim, self._dtype, self._device
        super(HypersphericalUniform, new).__init__(
            torch.Size(batch_shape), self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        r"""Uniform points: normalised standard Gaussians.

        :param sample_shape: the shape of the batch of draws.
        :returns: points of shape ``sample_shape + batch_shape + (dim + 1,)``.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        g = torch.randn(shape, dtype=self._dtype, device=self._device)
        return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)

    def log_prob(self, value):
        r""":math:`-\log|S^{\text{dim}}|` for every point.

        :param torch.Tensor value: points on the sphere, shape ``(..., dim + 1)``.
        """
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(
            shape, -log_sphere_area(self._dim), dtype=value.dtype, device=value.device
        )

    def entropy(self):
        r""":math:`\log|S^{\text{dim}}|`, shape ``batch_shape``."""
        return torch.full(
            self.batch_shape, log_sphere_area(self._dim), dtype=self._dtype, device=self._device
        )

    @property
    def mean(self):
        r"""Zeros, shape ``batch_shape + (dim + 1,)``."""
        return torch.zeros(
            self.batch_shape + self.event_shape, dtype=self._dtype, device=self._device
        )


class VonMisesFisher(TorchDistribution):
    r"""The von Mises--Fisher distribution :math:`C_p(\kappa)\,e^{\kappa\mu^\top x}` on
    :math:`S^{p-1}`, for any :math:`p \ge 2` (see :mod:`pyro_vsm.distributions.sphere` for the
    normaliser, the sampler and the gradients).

    :param torch.Tensor loc: mean direction :math:`\mu`, unit vectors of shape ``(..., p)``.
    :param concentration: :math:`\kappa \ge 0`, a tensor broadcastable with
        ``loc.shape[:-1]`` or a number (:math:`\kappa = 0` is the uniform distribution).
    :param validate_args: as for torch distributions (checks :math:`\lVert\mu\rVert = 1` to
        Pyro's ``constraints.sphere`` tolerance and :math:`\kappa \ge 0`).
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.nonnegative}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc, concentration, validate_args=None):
        if not torch.is_tensor(loc) or loc.dim() < 1 or not loc.is_floating_point():
            got = f"shape {tuple(loc.shape)}" if torch.is_tensor(loc) else type(loc).__name__
            raise ValueError(f"loc must be a floating-point tensor of shape (..., p), got {got}")
        if loc.shape[-1] < 2:
            raise ValueError(f"loc must have p >= 2 coordinates, got shape {tuple(loc.shape)}")
        if isinstance(concentration, bool):
            raise ValueError(f"concentration must be a number or a tensor, got {concentration!r}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        except RuntimeError:
            raise ValueError(
                f"concentration of shape {tuple(concentration.shape)} does not broadcast with "
                f"loc's batch shape {tuple(loc.shape[:-1])}"
            ) from None
        p = loc.shape[-1]
        self.loc = loc.expand(batch_shape + (p,))
        self.concentration = concentration.expand(batch_shape)
        self._p = p
        self._cache = None
        super().__init__(batch_shape, torch.Size([p]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        r"""The same distribution with batch shape ``batch_shape`` (parameters expanded).

        :param batch_shape: the new batch shape.
        """
        new = self._get_checked_instance(VonMisesFisher, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + (self._p,))
        new.concentration = self.concentration.expand(batch_shape)
        new._p = self._p
        new._cache = None
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean_resultant_length(self):
        r""":math:`A_p(\kappa) = \mathbb E[\mu^\top x] = I_{p/2}(\kappa)/I_{p/2-1}(\kappa)`."""
        return bessel_iv_ratio(0.5 * self._p - 1, self.concentration)

    @property
    def mean(self):
        r""":math:`A_p(\kappa)\,\mu`, shape ``batch_shape + (p,)``."""
        return self.mean_resultant_length.unsqueeze(-1) * self.loc

    def log_normalizer(self):
        r""":math:`\log C_p(\kappa)`, shape ``batch_shape``."""
        return vmf_log_normalizer(self._p, self.concentration)

    def log_prob(self, value):
        r""":math:`\log C_p(\kappa) + \kappa\mu^\top x`.

        :param torch.Tensor value: points :math:`x` on the sphere, shape ``(..., p)``.
        """
        if self._validate_args:
            self._validate_sample(value)
        return self.log_normalizer() + self.concentration * (self.loc * value).sum(-1)

    def entropy(self):
        r""":math:`-\log C_p(\kappa) - \kappa A_p(\kappa)`, shape ``batch_shape``."""
        return -self.log_normalizer() - self.concentration * self.mean_resultant_length

    # ---- sampling -------------------------------------------------------------------------

    def _wood_constants(self, kappa):
        m = self._p - 1
        root = torch.sqrt(4 * kappa * kappa + m * m)
        b = m / (2 * kappa + root)  # = (-2 kappa + root) / m without cancellation
        a = 0.25 * (m + 2 * kappa + root)
        d = 4 * a * b / (1 + b) - m * math.log(m)
        return a, b, d

    def _accepted_eps(self, kappa):
        r"""The accepted Beta draws of Wood's sampler (no gradient), shape of ``kappa``. Each
        round proposes only for the draws not yet accepted (one host synchronisation per
        round)."""
        m = self._p - 1
        with torch.no_grad():
            flat = kappa.reshape(-1)
            a, b, d = self._wood_constants(flat)
            eps = torch.empty_like(flat)
            todo = torch.arange(flat.numel(), device=flat.device)
            half = torch.tensor(0.5 * m, dtype=flat.dtype, device=flat.device)
            for _ in range(_MAX_REJECTION_ROUNDS):
                if todo.numel() == 0:
                    return eps.reshape(kappa.shape)
                n = todo.numel()
                e = torch.distributions.Beta(half.expand(n), half.expand(n)).sample()
                u = torch.rand(n, dtype=flat.dtype, device=flat.device)
                bt = b[todo]
                t = 2 * a[todo] * bt / (1 - (1 - bt) * e)
                accept = m * torch.log(t) - t + d[todo] >= torch.log(u)
                eps[todo[accept]] = e[accept]
                todo = todo[~accept]
        raise RuntimeError(
            f"VonMisesFisher.rsample: Wood's rejection sampler did not accept within "
            f"{_MAX_REJECTION_ROUNDS} rounds (non-finite concentration?)"
        )

    def _householder(self, z0, loc):
        r"""An orthogonal map taking e_1 to ``loc``, applied to ``z0`` (no cancellation: the
        reflection vector is e_1 + sign(mu_1) mu, of squared norm >= 2)."""
        first = loc[..., :1]
        sign = torch.where(first < 0, -torch.ones_like(first), torch.ones_like(first))
        u = sign * loc
        u = torch.cat([u[..., :1] + 1, u[..., 1:]], dim=-1)
        reflected = z0 - 2 * u * (u * z0).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
        return -sign * reflected

    def rsample(self, sample_shape=()):
        r"""Reparametrised draws by Wood's rejection sampler (see
        :mod:`pyro_vsm.distributions.sphere`); differentiable in ``loc`` and ``concentration``
        with the accepted proposals held fixed. The last draw is remembered for
        :meth:`score_parts`.

        :param sample_shape: the shape of the batch of draws.
        :returns: points of shape ``sample_shape + batch_shape + (p,)``.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        m = self._p - 1
        kappa = self.concentration
        a, b, _ = self._wood_constants(kappa)
        log_c = self.log_normalizer()
        # constants on the batch shape, broadcast to the sample shape
        kappa, b, log_c = (t.expand(shape[:-1]) for t in (kappa, b, log_c))
        loc = self.loc.expand(shape)
        eps = self._accepted_eps(kappa.detach())
        denom = 1 - (1 - b) * eps
        one_minus_w = 2 * b * eps / denom
        one_plus_w = 2 * (1 - eps) / denom
        w = 1 - one_minus_w
        v = torch.randn(shape[:-1] + (m,), dtype=loc.dtype, device=loc.device)
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        tail = torch.sqrt((one_minus_w * one_plus_w).clamp(min=0)).unsqueeze(-1) * v
        z = self._householder(torch.cat([w.unsqueeze(-1), tail], dim=-1), loc)
        z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        # log q(w; kappa) - log r(w; kappa) at the accepted eps, differentiable in kappa
        log_q = log_c + log_sphere_area(self._p - 2) + kappa * w
        if self._p != 3:
            log_q = log_q + 0.5 * (self._p - 3) * (torch.log(one_minus_w) + torch.log(one_plus_w))
        half = 0.5 * m
        log_beta = (
            (half - 1) * (torch.log(eps) + torch.log1p(-eps))
            - 2 * math.lgamma(half)
            + math.lgamma(m)
        )
        log_r = log_beta - torch.log(2 * b) + 2 * torch.log(denom)
        self._cache = (z, log_q - log_r)
        return z

    def score_parts(self, value):
        r"""Pyro's score parts: the reparametrised ``log_prob`` (pathwise and entropy terms) and,
        for the last value drawn by :meth:`rsample`, the score term of the rejection sampler
        (see :mod:`pyro_vsm.distributions.sphere`); ``0`` for any other value.

        :param torch.Tensor value: points on the sphere, shape ``(..., p)``.
        """
        log_prob = self.log_prob(value)
        score = 0
        if self._cache is not None and value is self._cache[0]:
            score = self._cache[1]
        return ScoreParts(log_prob=log_prob, score_function=score, entropy_term=log_prob)


@kl.register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL(VonMisesFisher || HypersphericalUniform): event shapes differ, "
            f"{tuple(p.event_shape)} and {tuple(q.event_shape)} (HypersphericalUniform(dim) has "
            "dim + 1 coordinates)"
        )
    kl_value = (
        p.log_normalizer()
        + p.concentration * p.mean_resultant_length
        + log_sphere_area(p.event_shape[0] - 1)
    )
    return kl_value.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
