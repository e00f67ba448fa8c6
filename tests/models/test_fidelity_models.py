"""The ResNet and DenseNet networks, the calibrated Laplace decoder and the fixed-scale (ECVAE)
guide."""

import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm import M1Loss, M2Loss
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import (
    DenseNetMLP,
    GaussianVAE,
    LaplaceVAE,
    ResNetDecoder,
    ResNetEncoder,
    calibrated_laplace_scale,
)

# ---------------------------------------------------------------- ResNet


@pytest.mark.parametrize("size", [8, 32])
def test_resnet_shapes_with_leading_dims(size):
    enc = ResNetEncoder(6, channels=2, width=4, image_size=size)
    dec = ResNetDecoder(3, channels=2, width=4, image_size=size)
    assert enc(torch.randn(5, 4, 2, size, size)).shape == (5, 4, 6)
    assert dec(torch.randn(5, 4, 3)).shape == (5, 4, 2, size, size)


def test_resnet_maps_points_independently():
    # no batch statistics: a point's output does not depend on the rest of the batch
    enc, dec = ResNetEncoder(4, width=4), ResNetDecoder(2, width=4)
    x, z = torch.randn(6, 1, 8, 8), torch.randn(6, 2)
    assert torch.allclose(enc(x)[2], enc(x[2:3])[0], atol=1e-6)
    assert torch.allclose(dec(z)[2], dec(z[2:3])[0], atol=1e-6)


@pytest.mark.parametrize("bad", [10, 4, True, 8.0])
def test_resnet_rejects_bad_image_size(bad):
    with pytest.raises(ValueError, match="image_size"):
        ResNetEncoder(4, image_size=bad)


@pytest.mark.parametrize("loss", [Trace_ELBO, M1Loss, M2Loss])
def test_resnet_vae_trains_with_score_losses(loss):
    model = GaussianVAE(ResNetDecoder(3, width=4), 3, (1, 8, 8))
    guide = DiagonalNormalEncoder(ResNetEncoder(6, width=4), 3)
    x = torch.randn(4, 1, 8, 8)
    kw = {"inference": "fisher"} if loss is M1Loss else {}
    svi = SVI(
        model, guide, Adam({"lr": 1e-3}), loss=loss(num_particles=2, vectorize_particles=True, **kw)
    )
    values = [svi.step(x) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(v)) for v in values)


# ---------------------------------------------------------------- DenseNet


def test_densenet_connectivity_and_weight_norm():
    net = DenseNetMLP(3, 5, hidden=16, depth=4)
    # layer l sees the input and every earlier layer's features
    assert [layer.in_features for layer in net.layers] == [3, 19, 35, 51]
    assert net.out.in_features == 3 + 4 * 16
    assert net(torch.randn(7, 2, 3)).shape == (7, 2, 5)
    for layer in [*net.layers, net.out]:
        g = layer.parametrizations.weight.original0
        with torch.no_grad():
            g.mul_(2.5)  # W = g v / |v| row by row: the rows' norms follow g
        assert torch.allclose(layer.weight.norm(dim=1), g.squeeze(1), rtol=1e-5)
    plain = DenseNetMLP(3, 5, weight_norm=False)
    assert not hasattr(plain.out, "parametrizations")


def test_densenet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        DenseNetMLP(2, 2, depth=0)
    with pytest.raises(ValueError, match="hidden"):
        DenseNetMLP(2, 2, hidden=True)
    with pytest.raises(ValueError, match="weight_norm"):
        DenseNetMLP(2, 2, weight_norm=1)


def test_densenet_vae_params_reach_pyro():
    model = GaussianVAE(DenseNetMLP(2, 2), 2, (2,))
    guide = DiagonalNormalEncoder(DenseNetMLP(2, 4), 2)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=Trace_ELBO())
    svi.step(torch.randn(16, 2))
    names = list(pyro.get_param_store().keys())
    assert any("parametrizations.weight.original0" in n for n in names)  # g
    assert any("parametrizations.weight.original1" in n for n in names)  # v


# ---------------------------------------------------------------- calibrated Laplace


def _laplace_loglik(x, loc, b):
    return dist.Laplace(loc, b).log_prob(x).sum()


def test_calibrated_scale_is_the_laplace_mle():
    torch.manual_seed(1)
    loc = torch.randn(50, 6, dtype=torch.float64)
    x = loc + 0.3 * torch.distributions.Laplace(0.0, 1.0).sample((50, 6)).double()
    b = calibrated_laplace_scale(x, loc)
    # closed form: the mean absolute residual (scipy's Laplace MLE with the location fixed)
    _, b_scipy = scipy.stats.laplace.fit((x - loc).flatten().numpy(), floc=0.0)
    assert torch.allclose(b, torch.tensor(b_scipy, dtype=b.dtype), rtol=1e-10)
    # stationary point and maximum of the likelihood in b
    bb = b.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_laplace_loglik(x, loc, bb), bb)
    assert abs(grad.item()) < 1e-8
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert _laplace_loglik(x, loc, b * factor) < _laplace_loglik(x, loc, b)


def _delta_guide(x, num_data=None):
    """A point's latent is its first two coordinates (so the residual is known)."""
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("z", dist.Delta(x[:, :2]).to_event(1))


def _trace(model, guide, x):
    tr = pyro.poutine.trace(guide).get_trace(x)
    return pyro.poutine.trace(pyro.poutine.replay(model, tr)).get_trace(x)


def test_laplace_vae_train_batch_scale_and_held_out_scale():
    decoder = torch.nn.Linear(2, 3)
    model = LaplaceVAE(decoder, 2, (3,))
    guide = _delta_guide
    x_train, x_test = torch.randn(10, 3), 5.0 * torch.randn(10, 3)
    with torch.no_grad():
        train_residual = (x_train - decoder(x_train[:, :2])).abs().mean()
        test_residual = (x_test - decoder(x_test[:, :2])).abs().mean()
    # training mode: the scale of the current batch, stored
    tr = _trace(model, guide, x_train)
    fn = tr.nodes["x"]["fn"].base_dist
    assert torch.allclose(fn.scale, train_residual.expand(10, 3))
    assert not fn.scale.requires_grad
    assert torch.allclose(model.scale, train_residual)
    # fit_scale: the mean absolute residual over the training data
    model.scale.fill_(7.0)
    assert torch.allclose(model.fit_scale(x_train, guide, batch_size=3), train_residual)
    # evaluation mode: the stored (training) scale, never the test residual
    model.eval()
    tr = _trace(model, guide, x_test)
    fn = tr.nodes["x"]["fn"].base_dist
    assert torch.allclose(fn.scale, train_residual.expand(10, 3))
    assert not torch.allclose(fn.scale, test_residual.expand(10, 3))
    assert torch.allclose(model.scale, train_residual)  # unchanged by the test data
    expected = dist.Laplace(decoder(x_test[:, :2]), train_residual).log_prob(x_test).sum()
    assert torch.allclose(tr.nodes["x"]["fn"].log_prob(x_test).sum(), expected)


def test_laplace_vae_trains_and_rejects_bad_arguments():
    model = LaplaceVAE(torch.nn.Linear(2, 4), 2, (4,))
    guide = DiagonalNormalEncoder.mlp(4, 2, hidden=(8,))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=Trace_ELBO())
    assert all(abs(svi.step(torch.randn(8, 4))) < float("inf") for _ in range(3))
    with pytest.raises(ValueError, match="min_scale"):
        LaplaceVAE(torch.nn.Linear(2, 4), 2, (4,), min_scale=0.0)
    with pytest.raises(ValueError, match="decoder"):
        LaplaceVAE("linear", 2, (4,))


# ---------------------------------------------------------------- ECVAE guide


def test_fixed_scale_guide():
    guide = DiagonalNormalEncoder(torch.nn.Linear(3, 2), 2, fixed_scale=1.0)
    q = guide.distribution(torch.randn(5, 3))
    assert torch.equal(q.base_dist.scale, torch.ones(5, 2))
    # the usual 2 * latent_dim encoder works too: the second half is ignored
    guide2 = DiagonalNormalEncoder.mlp(3, 2, hidden=(4,), fixed_scale=0.5)
    q2 = guide2.distribution(torch.randn(5, 3))
    assert q2.batch_shape == (5,) and torch.allclose(q2.base_dist.scale, torch.full((5, 2), 0.5))
    for bad in (0.0, -1.0, True):
        with pytest.raises(ValueError, match="fixed_scale"):
            DiagonalNormalEncoder(torch.nn.Linear(3, 2), 2, fixed_scale=bad)
