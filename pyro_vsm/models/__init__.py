"""Ready-made Pyro models."""

from .networks import ConvDecoder, ConvEncoder, data_plate, mlp
from .vae import GaussianVAE

__all__ = ["ConvDecoder", "ConvEncoder", "GaussianVAE", "data_plate", "mlp"]
