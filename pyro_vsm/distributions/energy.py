r"""An unnormalized distribution :math:`p(z) \propto e^{-E(z)}` usable as a Pyro sample site.

Under ELBO-style losses the latent of a prior site is replayed from the guide, so the model only
needs ``log_prob``; ``sample`` is never called. :class:`EnergyDistribution` therefore returns the
*unnormalized* log-density :math:`-E(z)` (plus a normalised base log-density for an
exponentially tilted base) and says so through :attr:`EnergyDistribution.is_normalized`. With it,
``Trace_ELBO`` computes the analogous lower bound :math:`\mathbb E_q[\log p(x|z) - E(z) -
\log q(z|x)] = \mathrm{ELBO} + \log Z` (Section 2.3 of [1]), which has the right gradients for
the guide and the decoder but **not** for the energy's parameters (:math:`\log Z` depends on
them); those need their own objective.

References:

[1] `Variational Inference with Unnormalized Priors`,
    anonymous authors (under double-blind review)
"""

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

__all__ = ["EnergyDistribution"]


class EnergyDistribution(TorchDistribution):
    r"""Unnormalized distribution :math:`\tilde p(z) = e^{-E(z)}\, b(z)` on
    :math:`\mathbb{R}^{\text{event_shape}}`.

    ``log_prob(z)`` is :math:`-E(z)`, or :math:`-E(z) + \log b(z)` when a normalised ``base``
    distribution :math:`b` is given (an exponentially tilted base, as in Pang et al. [1]). The
    normalising constant :math:`Z = \int e^{-E(z)} b(z)\,dz` is left out: the class attribute
    :attr:`is_normalized` is ``False`` so that losses and evaluators can recognise the site, and
    :meth:`log_partition` / :meth:`normalized_log_prob` give :math:`\log Z` and
    :math:`\log p(z)` where the energy knows its partition function exactly (otherwise use
    :func:`pyro_vsm.evaluation.log_partition`, e.g. by AIS).

    The batch shape is ``()`` (or the base's batch shape) and :meth:`expand` gives any batch
    shape, so the distribution works inside ``pyro.plate`` and with vectorised particles;
    ``log_prob`` broadcasts like any torch distribution.

    Pyro's autoguides call ``sample()`` once to initialise (``init_to_feasible``,
    ``init_to_median``): give them ``init_loc_fn=init_to_value(values={"z": ...})`` for every
    energy site, or a ``sampler``.

    :param energy: a callable (typically a ``torch.nn.Module``, see
        :mod:`pyro_vsm.distributions.energies`) mapping ``z`` of shape
        ``(..., *event_shape)`` to :math:`E(z)` of shape ``(...)``. Register its parameters with
        ``pyro.module`` in the model for Pyro optimisers to see them.
    :param base: optional normalised distribution with the same ``event_shape`` (and a batch
        shape that the batch shape of this distribution extends), e.g.
        ``dist.Normal(zeros(d), 1).to_event(1)``.
    :param sampler: optional callable ``sampler(distribution, shape) -> tensor`` used by
        :meth:`sample`, e.g. :class:`pyro_vsm.samplers.LangevinSampler`; ``shape`` is
        ``sample_shape + batch_shape + event_shape``. Without it :meth:`sample` raises.
    :param event_shape: shape of one ``z``; read from ``energy.event_shape`` (then from
        ``base.event_shape``) when not given.
    :param validate_args: as for torch distributions.
    :param support: optional constraint declaring where ``z`` lives (default: all of
        :math:`\mathbb{R}^{\text{event_shape}}`), e.g. ``constraints.sphere`` for an energy on
        the unit sphere (``log_prob`` is then an unnormalized density with respect to the surface
        measure, and losses such as minimum-velocity learning treat the site as spherical). A
        constraint with fewer event dims than ``event_shape`` is made ``independent`` over the
        rest.

    References:

    [1] `Learning Latent Space Energy-Based Prior Model`,
        Bo Pang, Tian Han, Erik Nijkamp, Song-Chun Zhu, Ying Nian Wu (2020)
    """

    arg_constraints = {}
    has_rsample = False
    #: ``log_prob`` omits the normalising constant :math:`\log Z`.
    is_normalized = False

    def __init__(
        self, energy, base=None, sampler=None, event_shape=None, validate_args=None, support=None
    ):
        if not callable(energy):
            raise ValueError(f"energy must be callable (z -> E(z)), got {type(energy).__name__}")
        if sampler is not None and not callable(sampler):
            raise ValueError(
                f"sampler must be a callable (distribution, shape) -> samples, got {sampler!r}"
            )
        if event_shape is None:
            event_shape = getattr(energy, "event_shape", None)
        if event_shape is None and base is not None:
            event_shape = base.event_shape
        if event_shape is None:
            raise ValueError(
                "EnergyDistribution: pass event_shape (the energy does not declare an "
                "event_shape attribute and there is no base distribution)"
            )
        try:
            event_shape = torch.Size(event_shape)
        except TypeError:
            raise ValueError(f"event_shape must be a shape, got {event_shape!r}") from None
        batch_shape = torch.Size()
        if base is not None:
            if not isinstance(base, torch.distributions.Distribution):
                raise ValueError(f"base must be a torch distribution, got {type(base).__name__}")
            if base.event_shape != event_shape:
                raise ValueError(
                    f"base must have event_shape {tuple(event_shape)} (the energy's), got "
                    f"{tuple(base.event_shape)}; use base.to_event(...) to declare event dims"
                )
            batch_shape = base.batch_shape
        if support is not None:
            if not isinstance(support, constraints.Constraint):
                raise ValueError(f"support must be a constraint, got {support!r}")
            extra = len(event_shape) - support.event_dim
            if extra < 0:
                raise ValueError(
                    f"support {support} has {support.event_dim} event dims, more than "
                    f"event_shape {tuple(event_shape)}"
                )
            if extra > 0:
                support = constraints.independent(support, extra)
        self._support = support
        self.energy = energy
        self.base = base
        self.sampler = sampler
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def support(self):
        r"""The constraint given as ``support``, else the real vectors of ``event_shape``."""
        if self._support is not None:
            return self._support
        if not self.event_shape:
            return constraints.real
        return constraints.independent(constraints.real, len(self.event_shape))

    def expand(self, batch_shape, _instance=None):
        r"""The same distribution with a larger batch shape (the energy is shared).

        :param batch_shape: the new batch shape; it must extend the current one.
        :raises ValueError: when the current batch shape does not broadcast to ``batch_shape``.
        """
        batch_shape = torch.Size(batch_shape)
        try:
            broadcast = torch.broadcast_shapes(self.batch_shape, batch_shape)
        except RuntimeError:
            broadcast = None
        if broadcast != batch_shape:
            raise ValueError(
                f"EnergyDistribution: cannot expand batch_shape {tuple(self.batch_shape)} to "
                f"{tuple(batch_shape)}"
            )
        new = self._get_checked_instance(EnergyDistribution, _instance)
        new.energy = self.energy
        new.sampler = self.sampler
        new.base = None if self.base is None else self.base.expand(batch_shape)
        new._support = self._support
        super(EnergyDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _check_value(self, value):
        k = len(self.event_shape)
        if (
            not torch.is_tensor(value)
            or value.dim() < k
            or value.shape[value.dim() - k :] != (self.event_shape)
        ):
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(
                f"value must have shape (..., {', '.join(map(str, self.event_shape))}) "
                f"(the event_shape), got {shape}"
            )

    def _energy(self, value):
        e = self.energy(value)
        expected = value.shape[: value.dim() - len(self.event_shape)]
        if not torch.is_tensor(e) or e.shape != expected:
            got = tuple(e.shape) if torch.is_tensor(e) else type(e).__name__
            raise ValueError(
                f"EnergyDistribution: the energy returned {got} for a value of shape "
                f"{tuple(value.shape)}; expected shape {tuple(expected)}"
            )
        return e

    def potential(self, value):
        r""":math:`U(z) = E(z) - \log b(z) = -\log\tilde p(z)` without broadcasting to the batch
        shape: the energy a sampler targets (equal to ``energy(z)`` without a base).

        :param torch.Tensor value: points ``z`` of shape ``(..., *event_shape)``.
        """
        self._check_value(value)
        u = self._energy(value)
        if self.base is not None:
            u = u - self.base.log_prob(value)
        return u

    def log_prob(self, value):
        r"""Unnormalized :math:`\log\tilde p(z) = -E(z)\ (+ \log b(z))`, shape
        ``broadcast(value.shape[:-event_dim], batch_shape)``.

        :param torch.Tensor value: points ``z`` of shape ``(..., *event_shape)``.
        """
        self._check_value(value)
        if self._validate_args:
            self._validate_sample(value)
        lp = -self._energy(value)
        if self.base is not None:
            lp = lp + self.base.log_prob(value)
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape=()):
        r"""Draws with the configured ``sampler`` (detached: ``has_rsample`` is ``False``).

        :param sample_shape: the shape of the batch of draws.
        :raises NotImplementedError: when no ``sampler`` was given.
        """
        shape = self._extended_shape(torch.Size(sample_shape))
        if self.sampler is None:
            raise NotImplementedError(
                "EnergyDistribution is unnormalized and cannot be sampled exactly: pass "
                "sampler=... (e.g. pyro_vsm.samplers.LangevinSampler(step_size, num_steps)) to "
                "draw approximate samples. Under ELBO-style losses the site's value comes from "
                "the guide and sample() is not needed."
            )
        z = self.sampler(self, shape)
        if not torch.is_tensor(z) or z.shape != shape:
            got = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"EnergyDistribution: the sampler returned {got}; expected {shape}")
        return z.detach()

    def log_partition(self):
        r""":math:`\log Z` from ``energy.log_partition()`` (exact energies, no base).

        :raises NotImplementedError: when the energy has no exact log-partition function or a
            base distribution is used; then estimate it with
            :func:`pyro_vsm.evaluation.log_partition` (AIS).
        """
        if self.base is not None:
            raise NotImplementedError(
                "EnergyDistribution.log_partition: no exact value with a base distribution; "
                "estimate it with pyro_vsm.evaluation.log_partition(dist.potential, "
                "event_shape=dist.event_shape)"
            )
        exact = getattr(self.energy, "log_partition", None)
        if exact is None:
            raise NotImplementedError(
                f"EnergyDistribution.log_partition: {type(self.energy).__name__} has no exact "
                "log_partition(); estimate it with pyro_vsm.evaluation.log_partition(energy)"
            )
        return exact()

    def normalized_log_prob(self, value, log_partition=None):
        r""":math:`\log p(z) = \log\tilde p(z) - \log Z`, with :math:`\log Z` given (e.g. an
        AIS estimate) or from :meth:`log_partition`.

        :param torch.Tensor value: points ``z`` of shape ``(..., *event_shape)``.
        :param log_partition: :math:`\log Z` (a number or tensor); ``None`` for
            :meth:`log_partition`.
        """
        if log_partition is None:
            log_partition = self.log_partition()
        return self.log_prob(value) - log_partition

    def __repr__(self):
        name = getattr(type(self.energy), "__name__", "energy")
        base = "" if self.base is None else f", base={self.base!r}"
        return (
            f"EnergyDistribution(energy={name}{base}, batch_shape={tuple(self.batch_shape)}, "
            f"event_shape={tuple(self.event_shape)})"
        )
