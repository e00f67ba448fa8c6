"""Device agnosticism: every tensor a loss creates takes its device from the inputs.

On the ``meta`` device a tensor created without ``device=`` is a CPU tensor and mixing it with meta
tensors raises, so running the losses' computation on meta catches such tensors without a GPU.
Pyro's validation reads values back to the host, which meta tensors refuse, so it is off here.
"""

import pyro
import pytest
import torch

from pyro_vsm import JointFisherLoss, M1Loss
from tests.common import LinearGaussian

LOSSES = {
    "m1_kl_guide": lambda: M1Loss("kl", guide_steps=1),
    "m1_fisher_guide": lambda: M1Loss("fisher", guide_steps=1),
    "m1_fisher_reparam_guide": lambda: M1Loss("fisher-reparam", guide_steps=1),
    "m1_model": lambda: M1Loss("kl", guide_steps=0),
    "m1_model_hutchinson": lambda: M1Loss(guide_steps=0, laplacian="hutchinson"),
    "joint_fisher": JointFisherLoss,
}


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_run_on_meta(name, vectorize):
    pyro.enable_validation(False)
    lg = LinearGaussian(dx=3, dz=2, dtype=torch.float32, device="meta", learnable=True)
    x = torch.empty(8, 3, device="meta")
    loss = LOSSES[name]()
    loss.num_particles, loss.vectorize_particles = 3, vectorize
    if vectorize:
        loss.max_plate_nesting = 2
    value = loss.differentiable_loss(lg.model, lg.guide, x)
    assert value.device.type == "meta"
    value.backward()
