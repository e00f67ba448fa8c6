import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vsm import JointFisherLoss, M1Loss
from pyro_vsm.guides import DiagonalNormalEncoder
from pyro_vsm.models import GaussianVAE


@pytest.mark.parametrize("gamma", ["scalar", "diagonal", 0.3])
def test_mlp_vae_gamma_options(gamma):
    model = GaussianVAE.mlp(3, 2, gamma=gamma, gamma_init=0.5)
    guide = DiagonalNormalEncoder.mlp(3, 2)
    x = torch.randn(8, 3)
    tr = pyro.poutine.trace(
        pyro.poutine.replay(model, pyro.poutine.trace(guide).get_trace(x))
    ).get_trace(x)
    scale = tr.nodes["x"]["fn"].base_dist.scale
    expected = 0.3**0.5 if gamma == 0.3 else 0.5**0.5
    assert torch.allclose(scale, torch.full_like(scale, expected))
    assert ("gamma" in pyro.get_param_store()) == (gamma != 0.3)  # learnable unless fixed
    assert model.variance().shape == ((3,) if gamma == "diagonal" else ())


@pytest.mark.parametrize("size", [8, 32])
@pytest.mark.parametrize("loss", [Trace_ELBO, M1Loss, JointFisherLoss])
def test_conv_vae_shapes_and_step(loss, size):
    model = GaussianVAE.conv(4, channels=1, width=4, image_size=size)
    guide = DiagonalNormalEncoder.conv(4, channels=1, width=4, image_size=size)
    x = torch.randn(3, 1, size, size)
    svi = SVI(
        model, guide, Adam({"lr": 1e-3}), loss=loss(num_particles=2, vectorize_particles=True)
    )
    values = [svi.step(x) for _ in range(3)]
    assert all(isinstance(v, float) and abs(v) < float("inf") for v in values)
    tr = pyro.poutine.trace(guide).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (3, 4)
    out = pyro.poutine.trace(pyro.poutine.replay(model, tr)).get_trace(x)
    assert out.nodes["x"]["fn"].event_shape == (1, size, size)


def test_minibatch_scaling_matches_full_batch_expectation():
    """num_data scales the minibatch objective to the full data set, as Pyro's plates do."""
    torch.manual_seed(0)
    model, guide = GaussianVAE.mlp(2, 2), DiagonalNormalEncoder.mlp(2, 2)
    x = torch.randn(40, 2)
    loss = M1Loss(num_particles=200, vectorize_particles=True)
    full = loss.loss(model, guide, x)
    scaled = (
        loss.loss(model, guide, x[:20], num_data=40) / 2
        + loss.loss(model, guide, x[20:], num_data=40) / 2
    )
    assert scaled == pytest.approx(full, rel=0.02)


def test_conv_networks_reject_sizes_they_cannot_build():
    from pyro_vsm.models import ConvDecoder, ConvEncoder

    for bad in (4, 10, 8.0, True):
        with pytest.raises(ValueError, match="image_size"):
            ConvDecoder(2, image_size=bad)
        with pytest.raises(ValueError, match="image_size"):
            ConvEncoder(2, image_size=bad)
    assert ConvDecoder(2, 3, 4, image_size=28)(torch.randn(2, 2)).shape == (2, 3, 28, 28)
