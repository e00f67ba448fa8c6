r"""A fully connected DenseNet block with weight normalisation, the encoder and decoder of the toy
experiments of "Variational inference with unnormalized priors" (Section 4.1: "fully connected
DenseNet blocks with hidden size of 16 and depth size of 4 ... weight normalization is applied to
all layers of the encoder and decoder")."""

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .._checks import positive_int

__all__ = ["DenseNetMLP"]


class DenseNetMLP(nn.Module):
    r"""A fully connected DenseNet block (Huang et al., 2017) mapping ``(..., in_dim)`` to
    ``(..., out_dim)``.

    Layer :math:`\ell = 1, \dots, L` (``depth``) sees the concatenation of the input and the
    outputs of all earlier layers and adds ``hidden`` features,

    .. math::

        h_0 = x, \qquad h_\ell = a\big(W_\ell [h_0, h_1, \dots, h_{\ell-1}] + b_\ell\big),
        \qquad y = W_{\text{out}} [h_0, \dots, h_L] + b_{\text{out}},

    with activation :math:`a`. With ``weight_norm=True`` every linear layer (output layer
    included) is weight-normalised (Salimans & Kingma, 2016), :math:`W = g\, v / \lVert v\rVert`
    row by row, through :func:`torch.nn.utils.parametrizations.weight_norm`.

    The paper's toy setting is ``hidden=16, depth=4``; it does not name the activation, ELU is
    used here by default.

    :param int in_dim: input dimension.
    :param int out_dim: output dimension.
    :param int hidden: features added by each layer (the growth rate).
    :param int depth: number of hidden layers in the block.
    :param activation: activation class, instantiated once per layer.
    :param bool weight_norm: weight-normalise every linear layer.

    References:

    [1] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)

    [2] `Densely Connected Convolutional Networks`,
        Gao Huang, Zhuang Liu, Laurens van der Maaten, Kilian Q. Weinberger (2017)
    """

    def __init__(self, in_dim, out_dim, hidden=16, depth=4, activation=nn.ELU, weight_norm=True):
        super().__init__()
        in_dim = positive_int(in_dim, "in_dim")
        out_dim = positive_int(out_dim, "out_dim")
        hidden = positive_int(hidden, "hidden")
        depth = positive_int(depth, "depth")
        if not isinstance(weight_norm, bool):
            raise ValueError(f"weight_norm must be a bool, got {weight_norm!r}")
        self.in_dim, self.out_dim, self.hidden, self.depth = in_dim, out_dim, hidden, depth
        wrap = _weight_norm if weight_norm else (lambda layer: layer)
        self.layers = nn.ModuleList(
            wrap(nn.Linear(in_dim + i * hidden, hidden)) for i in range(depth)
        )
        self.activations = nn.ModuleList(activation() for _ in range(depth))
        self.out = wrap(nn.Linear(in_dim + depth * hidden, out_dim))

    def forward(self, x):
        r""":param torch.Tensor x: inputs of shape ``(..., in_dim)``."""
        features = x
        for layer, act in zip(self.layers, self.activations, strict=True):
            features = torch.cat([features, act(layer(features))], dim=-1)
        return self.out(features)


def _weight_norm(layer):
    return weight_norm(layer, name="weight", dim=0)
