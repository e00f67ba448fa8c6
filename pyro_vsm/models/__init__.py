r"""Ready-made Pyro models."""

from .energy_prior import EnergyPriorVAE, VampPriorVAE
from .networks import ConvDecoder, ConvEncoder, data_plate, mlp
from .vae import GaussianVAE

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "EnergyPriorVAE",
    "GaussianVAE",
    "VampPriorVAE",
    "data_plate",
    "mlp",
]
