r"""Ready-made Pyro models."""

from .energy_prior import EnergyPriorVAE, VampPriorVAE
from .networks import ConvDecoder, ConvEncoder, data_plate, mlp
from .sphere import EuclideanVAE, SphericalVAE
from .vae import GaussianVAE

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "EnergyPriorVAE",
    "EuclideanVAE",
    "GaussianVAE",
    "SphericalVAE",
    "VampPriorVAE",
    "data_plate",
    "mlp",
]
