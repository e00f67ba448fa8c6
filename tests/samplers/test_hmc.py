import pytest
import torch

from pyro_vsm.samplers import BatchedHMC


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_hmc_samples_independent_gaussians(dtype):
    # two targets (B = 2) with different scales, 400 chains each, two sites
    torch.manual_seed(0)
    sd = torch.tensor([[0.3], [2.0]], dtype=dtype)
    mean = torch.tensor([[1.0], [-3.0]], dtype=dtype)

    def potential(s):
        return 0.5 * (((s["a"] - mean) / sd) ** 2).sum(-1) + 0.5 * s["b"].pow(2).sum(-1)

    hmc = BatchedHMC(potential, step_size=0.1, num_steps=10, target_accept=0.7)
    state = {"a": torch.zeros(400, 2, 3, dtype=dtype), "b": torch.zeros(400, 2, 1, dtype=dtype)}
    for _ in range(150):
        state, _, accept_prob, _ = hmc.step(state)
    a = state["a"]
    torch.testing.assert_close(a.mean((0, 2)), mean[:, 0], atol=0.1 * sd.max(), rtol=0)
    torch.testing.assert_close(a.std(0).mean(-1), sd[:, 0], atol=0, rtol=0.15)
    torch.testing.assert_close(state["b"].std(), torch.tensor(1.0, dtype=dtype), atol=0.1, rtol=0)
    # the step size adapts per target: the wide target gets the larger one
    assert hmc.step_size.shape == (2,) and hmc.step_size[1] > hmc.step_size[0]
    assert abs(float(accept_prob.mean()) - 0.7) < 0.15


def test_non_finite_proposals_are_rejected():
    def potential(s):
        z = s["z"]
        # infinite energy (zero density) for negative values
        return torch.where(
            z[..., 0] > 0, 0.5 * z[..., 0] ** 2, torch.full_like(z[..., 0], float("inf"))
        )

    hmc = BatchedHMC(potential, step_size=0.5, num_steps=3)
    state = {"z": torch.full((200, 1, 1), 0.5)}
    for _ in range(20):
        state, energy, _, _ = hmc.step(state)
        assert bool((state["z"] > 0).all()) and bool(torch.isfinite(energy).all())


def test_invalid_settings():
    with pytest.raises(ValueError, match="target_accept"):
        BatchedHMC(lambda s: s, target_accept=1.5)
    with pytest.raises(ValueError, match="num_steps"):
        BatchedHMC(lambda s: s, num_steps=0)
    with pytest.raises(ValueError, match="jitter"):
        BatchedHMC(lambda s: s, jitter=1.0)
