"""Ready-made Pyro models."""

from .densenet import DenseNetMLP
from .energy_prior import EnergyPriorVAE, VampPriorVAE
from .laplace import LaplaceVAE, calibrated_laplace_scale
from .networks import ConvDecoder, ConvEncoder, data_plate, mlp
from .resnet import ResNetDecoder, ResNetEncoder
from .vae import GaussianVAE

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "DenseNetMLP",
    "EnergyPriorVAE",
    "GaussianVAE",
    "LaplaceVAE",
    "ResNetDecoder",
    "ResNetEncoder",
    "VampPriorVAE",
    "calibrated_laplace_scale",
    "data_plate",
    "mlp",
]
