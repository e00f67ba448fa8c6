r"""Ready-made guides: an amortized diagonal Gaussian encoder, a (non-amortized) Gaussian mixture
for Fisher inference without reparametrisation, and variational priors for adversarial
contrastive divergence."""

from .bernoulli import BernoulliEncoder
from .encoder import DiagonalNormalEncoder
from .mixture import GaussianMixtureGuide
from .variational_prior import GaussianVariationalPrior, iaf_prior

__all__ = [
    "BernoulliEncoder",
    "DiagonalNormalEncoder",
    "GaussianMixtureGuide",
    "GaussianVariationalPrior",
    "iaf_prior",
]
