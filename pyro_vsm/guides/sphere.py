r"""The explicit hyperspherical encoder: an amortized von Mises--Fisher guide."""

import pyro
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn
from torch.nn.functional import normalize, softplus

from .._checks import check_positive, positive_int
from ..distributions.sphere import VonMisesFisher
from ..models.networks import data_plate, mlp

__all__ = ["VonMisesFisherEncoder"]


class VonMisesFisherEncoder(PyroModule):
    r"""Amortized von Mises--Fisher guide on :math:`S^n`,
    :math:`q_\phi(z|x) = \mathrm{vMF}(\mu_\phi(x), \kappa_\phi(x))` (the explicit encoder of the
    hyperspherical VAE [1]).

    The network's output has :math:`n + 2` columns: the first :math:`n + 1` are normalised to the
    mean direction :math:`\mu`, the last gives :math:`\kappa = \operatorname{softplus}(\cdot) +
    \kappa_{\min}` (:math:`\kappa_{\min} = 1` in [1], against posterior collapse).

    Call it with the model's arguments, ``guide(x, num_data=None)``; it samples site ``"z"``
    inside plate ``"data"``. The draws are reparametrised (Wood's rejection sampler with the
    accepted proposal held fixed), and the site's score parts carry the rejection sampler's
    correction for :math:`\kappa`, so ``Trace_ELBO`` gives unbiased gradients. Pyro's
    ``TraceMeanField_ELBO`` refuses the guide (it does not accept score-function terms); use
    ``Trace_ELBO``.

    :param torch.nn.Module encoder: maps ``(...,) + obs_shape`` to ``(..., n + 2)``.
    :param int latent_dim: :math:`n`, the sphere's dimension.
    :param float min_concentration: :math:`\kappa_{\min} \ge 0`.

    References:

    [1] `Hyperspherical Variational Auto-Encoders`,
        Tim R. Davidson, Luca Falorsi, Nicola De Cao, Thomas Kipf, Jakub M. Tomczak (2018)
    """

    def __init__(self, encoder, latent_dim, min_concentration=1.0):
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.min_concentration = check_positive(
            min_concentration, "min_concentration", allow_zero=True
        )
        to_pyro_module_(encoder)
        self.encoder = encoder

    @classmethod
    def mlp(cls, data_dim, latent_dim, hidden=(256, 256), activation=nn.Tanh, **kwargs):
        r"""The guide with an MLP encoder (the reference code's: two hidden layers of 256 units
        with tanh).

        :param int data_dim: dimension of ``x``.
        :param int latent_dim: :math:`n`.
        :param hidden: widths of the hidden layers.
        :param activation: the activation class.
        :param kwargs: further arguments of the class (``min_concentration``).
        """
        n = positive_int(latent_dim, "latent_dim")
        return cls(mlp(data_dim, hidden, n + 2, activation), n, **kwargs)

    def distribution(self, x):
        r"""The guide's distribution ``q(z|x)`` for a batch ``x`` (batch shape ``x.shape[:1]``).

        :param torch.Tensor x: a batch of data.
        """
        out = self.encoder(x)
        p = self.latent_dim + 1
        if out.shape[-1] != p + 1:
            raise ValueError(
                f"VonMisesFisherEncoder: the encoder must output n + 2 = {p + 1} columns, got "
                f"shape {tuple(out.shape)}"
            )
        loc = normalize(out[..., :p], dim=-1)
        concentration = softplus(out[..., p]) + self.min_concentration
        return VonMisesFisher(loc, concentration)

    def forward(self, x, num_data=None):
        r"""Samples site ``"z"`` inside plate ``"data"``.

        :param torch.Tensor x: a batch of data (the model's argument).
        :param int num_data: the size of the whole data set when ``x`` is a minibatch.
        """
        with data_plate(x, num_data):
            return pyro.sample("z", self.distribution(x))
