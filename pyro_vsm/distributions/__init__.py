r"""Distributions for energy-based priors.

* :class:`EnergyDistribution`: an unnormalized :math:`e^{-E(z)}` (optionally times a normalised
  base density) usable as a Pyro sample site (``is_normalized = False``);
* energies (``torch.nn.Module``, ``(..., d) -> (...)``, with ``event_shape``):
  :class:`GRBMEnergy` (exact ``log_partition()`` for few hidden units), :class:`MLPEnergy`,
  :class:`QuadraticFormEnergy`, :class:`TiltedGaussianEnergy`,
  :class:`ConditionalQuadraticFormEnergy` (conditional, for implicit encoders);
* :class:`LogitRelaxedBernoulli`: the binary Concrete relaxation in logit space;
* distributions on the sphere: :class:`HypersphericalUniform`, :class:`VonMisesFisher`.
"""

from .conditional_energy import ConditionalQuadraticFormEnergy
from .energies import GRBMEnergy, MLPEnergy, QuadraticFormEnergy, TiltedGaussianEnergy
from .energy import EnergyDistribution
from .relaxed import LogitRelaxedBernoulli
from .sphere import HypersphericalUniform, VonMisesFisher

__all__ = [
    "ConditionalQuadraticFormEnergy",
    "EnergyDistribution",
    "GRBMEnergy",
    "HypersphericalUniform",
    "LogitRelaxedBernoulli",
    "MLPEnergy",
    "QuadraticFormEnergy",
    "TiltedGaussianEnergy",
    "VonMisesFisher",
]
