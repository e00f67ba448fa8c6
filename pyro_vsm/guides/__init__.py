r"""Ready-made guides: an amortized diagonal Gaussian encoder, an amortized von Mises--Fisher
encoder on the sphere, an implicit encoder (Euclidean or on the sphere), a (non-amortized)
Gaussian mixture for Fisher inference without reparametrisation, variational priors for
adversarial contrastive divergence, and a relaxed Bernoulli encoder for binary latents."""

from .bernoulli import BernoulliEncoder
from .encoder import DiagonalNormalEncoder
from .implicit import ImplicitEncoder
from .mixture import GaussianMixtureGuide
from .sphere import VonMisesFisherEncoder
from .variational_prior import GaussianVariationalPrior, iaf_prior

__all__ = [
    "BernoulliEncoder",
    "DiagonalNormalEncoder",
    "GaussianMixtureGuide",
    "GaussianVariationalPrior",
    "ImplicitEncoder",
    "VonMisesFisherEncoder",
    "iaf_prior",
]
