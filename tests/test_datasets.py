import pytest
import torch

from pyro_vsm.datasets import DATASETS_2D, make_2d


@pytest.mark.parametrize("name", sorted(DATASETS_2D))
def test_deterministic_and_finite(name):
    a, b, c = make_2d(name, 300, seed=1), make_2d(name, 300, seed=1), make_2d(name, 300, seed=2)
    assert a.shape == (300, 2) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        make_2d("mnist", 10)


def test_banana_moments():
    x = make_2d("banana", 20000, seed=0, dtype=torch.float64)
    # x1 ~ N(0, 1), E[x2] = 0.5 E[x1²] - 1 = -0.5
    assert x[:, 0].mean().abs() < 0.03 and x[:, 0].var().sub(1).abs() < 0.05
    assert (x[:, 1].mean() + 0.5).abs() < 0.03
