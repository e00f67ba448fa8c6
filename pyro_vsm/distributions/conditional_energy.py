r"""A conditional energy :math:`E_\psi(z, x)` in the quadratic-form ("score-net") parametrisation,
the energy that estimates the score of an implicit distribution in Wang et al. [1].

With :math:`s` an input scale (the hyperspherical models of [1] feed :math:`z\sqrt{n+1}` to their
networks so that the codes have the norm of a standard Gaussian's),

.. math::

    E_\psi(z, x) = \langle h_\psi([s z, x]),\ s z\rangle,

where :math:`h_\psi` is an MLP from the latent and conditioning inputs to the latent space. Its
gradient :math:`-\nabla_z E_\psi(z, x)` estimates the conditional score
:math:`\nabla_z\log q(z|x)` of an implicit encoder (the VAE of [1], Section 6.2.1); without a
conditioning input (``cond_dim=0``) it is the marginal energy :math:`E_\psi(z)` of an aggregate
posterior (the WAE of [1], Section 6.2.2). Parametrising the scalar energy rather than the score
makes the estimated score a conservative field; the form :math:`z^\top h(z)` corrects an initial
score network :math:`h` (those of [2]) to be conservative ([1], Section 6.2 and Appendix E.1.1).

On the sphere only the values on :math:`S^n` matter (the minimum-velocity estimators and the
entropy gradient both use the tangent part of :math:`\nabla_z E`); the energy itself is defined
on the ambient space.

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)

[2] `Sliced Score Matching: A Scalable Approach to Density and Score Estimation`,
    Yang Song, Sahaj Garg, Jiaxin Shi, Stefano Ermon (2020)
"""

import torch
from torch import nn

from .._checks import check_int, check_positive
from .._checks import positive_int as _positive_int
from .energies import _hidden_sizes, _mlp, check_input

__all__ = ["ConditionalQuadraticFormEnergy"]


class ConditionalQuadraticFormEnergy(nn.Module):
    r""":math:`E_\psi(z, x) = \langle h_\psi([s z, x]), s z\rangle`, a conditional (or, with
    ``cond_dim=0``, marginal) energy on the latent space (see the module docstring).

    Call it as ``energy(z, x)`` with ``z`` of shape ``(..., latent_dim)`` and ``x`` of shape
    ``(..., cond_dim)`` (leading dims broadcast); or ``energy(z)`` when ``cond_dim = 0``. The
    defaults are the reference code's networks: two hidden layers of 256 units with tanh.

    :param int latent_dim: the number of coordinates of ``z`` (:math:`n + 1` on :math:`S^n`).
    :param int cond_dim: the number of coordinates of the conditioning input ``x`` (0: none).
    :param hidden: widths of the hidden layers of :math:`h_\psi`.
    :param activation: a ``torch.nn.Module`` class or instance (default ``nn.Tanh``).
    :param float input_scale: :math:`s > 0` (e.g. :math:`\sqrt{n+1}` on :math:`S^n`).
    :param torch.dtype dtype: dtype of the parameters (default: torch's default dtype).
    :param torch.device device: device of the parameters.
    """

    def __init__(
        self,
        latent_dim,
        cond_dim=0,
        hidden=(256, 256),
        activation=nn.Tanh,
        input_scale=1.0,
        *,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        self.cond_dim = check_int(cond_dim, "cond_dim", 0)
        self.input_scale = check_positive(input_scale, "input_scale")
        self.h = _mlp(
            self.latent_dim + self.cond_dim,
            _hidden_sizes(hidden),
            self.latent_dim,
            activation,
            dtype,
            device,
        )
        self.event_shape = torch.Size([self.latent_dim])

    def forward(self, z, x=None):
        r""":math:`E_\psi(z, x)`, shape: the broadcast of ``z.shape[:-1]`` and ``x.shape[:-1]``.

        :param torch.Tensor z: latent points, shape ``(..., latent_dim)``.
        :param torch.Tensor x: conditioning inputs, shape ``(..., cond_dim)``; ``None`` when
            ``cond_dim = 0``.
        """
        z = check_input(z, self.latent_dim) * self.input_scale
        if self.cond_dim == 0:
            if x is not None:
                raise ValueError(
                    "ConditionalQuadraticFormEnergy: cond_dim=0 (a marginal energy) takes no x"
                )
            inputs = z
        else:
            if x is None:
                raise ValueError(
                    f"ConditionalQuadraticFormEnergy: x of shape (..., {self.cond_dim}) is needed"
                )
            x = check_input(x, self.cond_dim, name="x")
            try:
                lead = torch.broadcast_shapes(z.shape[:-1], x.shape[:-1])
            except RuntimeError:
                raise ValueError(
                    f"ConditionalQuadraticFormEnergy: z of shape {tuple(z.shape)} and x of shape "
                    f"{tuple(x.shape)} do not broadcast"
                ) from None
            z = z.expand(lead + z.shape[-1:])
            inputs = torch.cat([z, x.to(z.dtype).expand(lead + x.shape[-1:])], -1)
        return (self.h(inputs) * z).sum(-1)

    def extra_repr(self):
        return (
            f"latent_dim={self.latent_dim}, cond_dim={self.cond_dim}, "
            f"input_scale={self.input_scale:g}"
        )
