r"""Implicit encoders: :math:`z = f_\phi(x, \varepsilon)` with no tractable density.

The guide pushes noise :math:`\varepsilon \sim \mathcal N(0, I)` through a network; on the sphere
the output is normalised, :math:`z = f/\lVert f\rVert` (the implicit hyperspherical encoder of
Wang et al. [1]). The sample enters Pyro as a :class:`~pyro.distributions.Delta` site, so ``"z"``
is the guide's only latent site and its log-density (zero) carries no information: train it with
a loss that supplies the entropy gradient, :class:`~pyro_vsm.infer.ImplicitELBO` (VAE) or
:class:`~pyro_vsm.infer.ImplicitWAELoss` (WAE, usually with ``noise_dim=0``, a deterministic
encoder).

The noise is drawn inside the guide from torch's global generator (seeded by
``pyro.set_rng_seed``), not at a Pyro sample site, with the batch shape of the enclosing
vectorized plates, so vectorized particles (``vectorize_particles=True``, evaluation plates) get
independent noise.

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from pyro.poutine.runtime import get_plates
from torch import nn
from torch.nn.functional import normalize

from .._checks import check_int, positive_int
from ..models.networks import data_plate, mlp

__all__ = ["ImplicitEncoder"]

MANIFOLDS = (None, "sphere")


def _plate_batch_shape(plate_name):
    r"""The batch shape of the enclosing vectorized plates, and the dim of the data plate."""
    frames = [f for f in get_plates() if f.vectorized]
    depth = max([-f.dim for f in frames], default=0)
    shape = [1] * depth
    data_dim = None
    for f in frames:
        shape[f.dim] = f.size
        if f.name == plate_name:
            data_dim = f.dim
    if data_dim is None:  # pragma: no cover - the guide always opens its plate
        raise RuntimeError(f"ImplicitEncoder: plate '{plate_name}' is not active")
    return torch.Size(shape), data_dim


class ImplicitEncoder(PyroModule):
    r"""An implicit guide: :math:`z = f_\phi([x, \varepsilon])` with :math:`\varepsilon \sim
    \mathcal N(0, I_k)`, normalised onto :math:`S^n` when ``manifold="sphere"`` (see the module
    docstring).

    Call it with the model's arguments, ``guide(x, num_data=None)``: it emits
    ``pyro.sample("z", Delta(z, event_dim=1))`` inside plate ``"data"``. Each data point is
    flattened to a vector, concatenated with its noise and passed through ``network``. With
    ``noise_dim=0`` the encoder is deterministic (the WAE's).

    :param torch.nn.Module network: maps ``(..., D + noise_dim)`` to ``(..., d)``, with ``D``
        the size of one flattened data point and ``d`` the coordinates of ``z`` (:math:`n + 1`
        on :math:`S^n`); converted in place to a :class:`~pyro.nn.PyroModule`.
    :param int latent_dim: :math:`n` (the sphere's dimension, or the Euclidean dimension).
    :param int noise_dim: :math:`k \ge 0`, the dimension of :math:`\varepsilon`.
    :param manifold: ``"sphere"`` (normalise the output) or ``None`` (Euclidean).
    """

    def __init__(self, network, latent_dim, noise_dim=8, manifold="sphere"):
        super().__init__()
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if manifold not in MANIFOLDS:
            raise ValueError(f"manifold must be None or 'sphere', got {manifold!r}")
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.noise_dim = check_int(noise_dim, "noise_dim", 0)
        self.manifold = manifold
        to_pyro_module_(network)
        self.network = network

    @property
    def coordinates(self):
        r"""The number of coordinates of ``z``."""
        return self.latent_dim + (1 if self.manifold == "sphere" else 0)

    @classmethod
    def mlp(
        cls,
        data_dim,
        latent_dim,
        noise_dim=8,
        hidden=(256, 256),
        activation=nn.Tanh,
        manifold="sphere",
    ):
        r"""The guide with an MLP (the reference code's: two hidden layers of 256 units with
        tanh).

        :param int data_dim: dimension of ``x``.
        :param int latent_dim: :math:`n`.
        :param int noise_dim: :math:`k \ge 0`.
        :param hidden: widths of the hidden layers.
        :param activation: the activation class.
        :param manifold: ``"sphere"`` or ``None``.
        """
        n = positive_int(latent_dim, "latent_dim")
        k = check_int(noise_dim, "noise_dim", 0)
        out = n + (1 if manifold == "sphere" else 0)
        return cls(
            mlp(positive_int(data_dim, "data_dim") + k, hidden, out, activation), n, k, manifold
        )

    def sample(self, x, batch_shape=None, data_dim=-1):
        r"""Draws :math:`z` for the data points ``x`` (outside Pyro).

        :param torch.Tensor x: a batch of data, shape ``(B,) + obs_shape``.
        :param torch.Size batch_shape: the batch shape of the draws, containing ``B`` at
            ``data_dim`` (default ``(B,)``).
        :param int data_dim: the (negative) dim of the data points in ``batch_shape``.
        :returns: ``z`` of shape ``batch_shape + (d,)``.
        """
        flat = x.reshape(x.shape[0], -1)
        if batch_shape is None:
            batch_shape = torch.Size([x.shape[0]])
        flat = flat.reshape((x.shape[0],) + (1,) * (-data_dim - 1) + flat.shape[-1:])
        flat = flat.expand(batch_shape + flat.shape[-1:])
        if self.noise_dim:
            eps = torch.randn(batch_shape + (self.noise_dim,), dtype=flat.dtype, device=flat.device)
            flat = torch.cat([flat, eps], -1)
        out = self.network(flat)
        if out.shape[-1] != self.coordinates:
            raise ValueError(
                f"ImplicitEncoder: the network must output {self.coordinates} coordinates, got "
                f"shape {tuple(out.shape)}"
            )
        return normalize(out, dim=-1) if self.manifold == "sphere" else out

    def forward(self, x, num_data=None):
        r"""Emits site ``"z"`` (a ``Delta`` at the drawn value) inside plate ``"data"``.

        :param torch.Tensor x: a batch of data (the model's argument).
        :param int num_data: the size of the whole data set when ``x`` is a minibatch.
        """
        with data_plate(x, num_data):
            shape, data_dim = _plate_batch_shape("data")
            z = self.sample(x, shape, data_dim)
            return pyro.sample("z", dist.Delta(z, event_dim=1))
