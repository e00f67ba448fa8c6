r"""Ready-made Pyro models."""

from .binary import BinaryLatentVAE
from .energy_prior import EnergyPriorVAE, VampPriorVAE
from .networks import ConvDecoder, ConvEncoder, data_plate, mlp
from .sphere import EuclideanVAE, SphericalVAE
from .vae import GaussianVAE

__all__ = [
    "BinaryLatentVAE",
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
