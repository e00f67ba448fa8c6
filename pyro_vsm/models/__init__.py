r"""Ready-made Pyro models."""

from .binary import BinaryLatentVAE
from .densenet import DenseNetMLP
from .energy_prior import EnergyPriorVAE, VampPriorVAE
from .laplace import LaplaceVAE, calibrated_laplace_scale
from .networks import ConvDecoder, ConvEncoder, data_plate, mlp
from .resnet import ResNetDecoder, ResNetEncoder
from .sphere import EuclideanVAE, SphericalVAE
from .vae import GaussianVAE

__all__ = [
    "BinaryLatentVAE",
    "ConvDecoder",
    "ConvEncoder",
    "DenseNetMLP",
    "EnergyPriorVAE",
    "EuclideanVAE",
    "GaussianVAE",
    "LaplaceVAE",
    "ResNetDecoder",
    "ResNetEncoder",
    "SphericalVAE",
    "VampPriorVAE",
    "calibrated_laplace_scale",
    "data_plate",
    "mlp",
]
