r"""Latents on the sphere for evaluators that move in :math:`\mathbb R^d`: an exact Gaussian
augmentation.

:func:`~pyro_vsm.evaluation.ais_log_likelihood` runs HMC in unconstrained coordinates, mapping
constrained latents through :func:`torch.distributions.biject_to`; the sphere has no such
bijection. But a density on :math:`S^n` lifts exactly to :math:`\mathbb R^{n+1}`: with the polar
decomposition :math:`w = r z`, :math:`r = \lVert w\rVert`, :math:`dw = r^n\,dr\,d\sigma(z)`, the
density

.. math::

    \tilde p(w) = p(w/\lVert w\rVert)\,\frac{\chi_{n+1}(\lVert w\rVert)}{\lVert w\rVert^n},
    \qquad \chi_{n+1}(r) = \frac{r^n e^{-r^2/2}}{2^{(n-1)/2}\,\Gamma(\frac{n+1}2)},

(:math:`p` with respect to the surface measure :math:`\sigma`) makes :math:`z = w/\lVert w\rVert`
distributed as :math:`p` and independent of :math:`r \sim \chi_{n+1}`, so for every :math:`f`

.. math::

    \int f(w/\lVert w\rVert)\,\tilde p(w)\,dw = \int_{S^n} f(z)\,p(z)\,d\sigma(z).

For the uniform prior :math:`\tilde p(w) = \mathcal N(w; 0, I_{n+1})` exactly, so
:math:`\int p(x|w/\lVert w\rVert)^\beta\,\mathcal N(w)\,dw = \int p(x|z)^\beta\,
\mathrm{Unif}(dz)` at every inverse temperature :math:`\beta` of an annealing path, and AIS on
:math:`w` estimates the same :math:`\log p(x)`. The same lift of a guide :math:`q(z|x)` on the
sphere gives a proposal on :math:`w` with the same importance weights.

:func:`sphere_augmented` applies the lift to every latent site whose distribution lives on the
sphere (``support = constraints.sphere``: :class:`~pyro_vsm.distributions.HypersphericalUniform`,
:class:`~pyro_vsm.distributions.VonMisesFisher`, ...), as a Pyro reparametrisation: the site
``name`` becomes a deterministic function of a new latent site ``name + "_ambient"`` on
:math:`\mathbb R^{n+1}`. :func:`~pyro_vsm.evaluation.ais_log_likelihood` applies it to the model
and the guide itself; other models pass through unchanged.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.infer.reparam.reparam import Reparam
from pyro.poutine.util import site_is_subsample

__all__ = ["AmbientLift", "SphereAugmentation", "sphere_augmented"]

#: the suffix of the latent site on the ambient space
SUFFIX = "_ambient"


class AmbientLift(TorchDistribution):
    r"""The lift :math:`\tilde p(w) = p(w/\lVert w\rVert)\,\chi_{n+1}(\lVert w\rVert)/\lVert
    w\rVert^n` to :math:`\mathbb R^{n+1}` of a distribution :math:`p` on :math:`S^n` (see the
    module docstring): :math:`w = r z` with :math:`z \sim p` and :math:`r \sim \chi_{n+1}`
    independent.

    :param base: a distribution on the sphere with event shape ``(n + 1,)`` (``log_prob``
        relative to the surface measure; ``sample`` or ``rsample``).
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, base, validate_args=None):
        if base.support is not constraints.sphere or len(base.event_shape) != 1:
            raise ValueError(
                f"AmbientLift: base must be a distribution on the sphere with event shape (d,), "
                f"got {type(base).__name__} with support {base.support}"
            )
        self.base = base
        self.has_rsample = bool(getattr(base, "has_rsample", False))
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        r"""The lift of the expanded base.

        :param batch_shape: the new batch shape.
        """
        return AmbientLift(self.base.expand(batch_shape))

    def _radius(self, shape, like):
        g = torch.randn(shape, dtype=like.dtype, device=like.device)
        return torch.linalg.vector_norm(g, dim=-1, keepdim=True)

    def rsample(self, sample_shape=()):
        r"""Draws :math:`w = r z`.

        :param sample_shape: the shape of the batch of draws.
        """
        z = self.base.rsample(sample_shape)
        return self._radius(z.shape, z) * z

    def sample(self, sample_shape=()):
        r"""Draws :math:`w = r z` without gradient.

        :param sample_shape: the shape of the batch of draws.
        """
        with torch.no_grad():
            z = self.base.sample(sample_shape)
            return self._radius(z.shape, z) * z

    def log_prob(self, value):
        r""":math:`\log p(z) - \tfrac12 r^2 - \tfrac{n-1}2\log 2 - \log\Gamma(\tfrac{n+1}2)` at
        :math:`w` = ``value``, :math:`r = \lVert w\rVert`, :math:`z = w/r`.

        :param torch.Tensor value: points of :math:`\mathbb R^{n+1}`, shape ``(..., n + 1)``.
        """
        d = self.event_shape[0]
        r2 = value.pow(2).sum(-1)
        z = value / r2.sqrt().unsqueeze(-1)
        const = 0.5 * (d - 2) * math.log(2.0) + math.lgamma(0.5 * d)
        return self.base.log_prob(z) - 0.5 * r2 - const


class SphereAugmentation(Reparam):
    r"""Pyro reparametrisation of a latent site on the sphere: the new latent ``name +
    "_ambient"`` has the :class:`AmbientLift` of the site's distribution and the site becomes
    the deterministic :math:`z = w/\lVert w\rVert` (see the module docstring)."""

    def apply(self, msg):
        r"""Pyro's reparametrisation hook.

        :param dict msg: the site's message (name, fn, value, is_observed).
        """
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        if msg["is_observed"]:
            raise ValueError(f"sphere_augmented: site '{name}' is observed (latents only)")
        base, event_dim = self._unwrap(fn)
        if event_dim != 1:
            raise ValueError(
                f"sphere_augmented: site '{name}' must have event shape (d,) (points on a sphere), "
                f"got event_dim {event_dim}"
            )
        # an initial value on the sphere lifts to the point of radius 1 (a valid injection)
        w = pyro.sample(
            f"{name}{SUFFIX}",
            self._wrap(AmbientLift(base), event_dim),
            obs=value,
            infer={"is_observed": False},
        )
        if value is None:
            value = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        return {
            "fn": dist.Delta(value, event_dim=1).mask(False),
            "value": value,
            "is_observed": True,
        }


def _on_sphere(msg):
    if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
        return None
    fn = msg["fn"]
    while hasattr(fn, "base_dist") and not isinstance(fn, AmbientLift):
        fn = fn.base_dist
    return SphereAugmentation() if fn.support is constraints.sphere else None


def sphere_augmented(fn):
    r"""``fn`` (a model or guide) with every latent site on the sphere lifted to its ambient
    space (see the module docstring); sites elsewhere are untouched.

    The site ``name`` becomes a deterministic site (observed, with zero log-density) whose value
    is :math:`w/\lVert w\rVert` for the new latent ``name + "_ambient"``, distributed as the
    :class:`AmbientLift` of the original distribution. Apply it to the model and the guide
    alike (their ``"_ambient"`` sites then pair up), e.g.
    ``importance_log_likelihood(sphere_augmented(model), sphere_augmented(guide), x)``; the
    estimate equals the original one in distribution. :func:`~pyro_vsm.evaluation.ais_log_likelihood`
    applies it itself.

    :param fn: a callable containing Pyro sample statements.
    :returns: the reparametrised callable.
    """
    if not callable(fn):
        raise ValueError(f"sphere_augmented: fn must be a model or guide, got {fn!r}")
    return pyro.poutine.reparam(fn, config=_on_sphere)
