import math

import pytest
import torch

from pyro_vsm.datasets import DATASETS_2D, MVL_DATASETS_2D, make_2d, mvl_log_prob
from pyro_vsm.datasets.files import load_dataset


def test_registered_under_their_own_names():
    assert set(MVL_DATASETS_2D) == {"mvl-banana", "cosine"}
    assert set(MVL_DATASETS_2D) <= set(DATASETS_2D)
    # the built-in banana is a different set
    assert not torch.equal(make_2d("banana", 100, seed=0), make_2d("mvl-banana", 100, seed=0))


def test_mvl_banana_moments():
    x = make_2d("mvl-banana", 100_000, seed=0, dtype=torch.float64)
    x0, x1 = x.unbind(-1)
    # x0 ~ N(0, 1); x1 - (x0² - 1) ~ N(0, 1) independent of x0; Var x1 = Var x0² + 1 = 3
    r = x1 - (x0**2 - 1)
    assert x0.mean().abs() < 0.02 and (x0.var() - 1).abs() < 0.02
    assert r.mean().abs() < 0.02 and (r.var() - 1).abs() < 0.02
    assert torch.corrcoef(torch.stack([r, x0]))[0, 1].abs() < 0.02
    assert (x1.var() - 3).abs() < 0.1


def test_cosine_moments():
    x = make_2d("cosine", 100_000, seed=0, dtype=torch.float64)
    x0, x1 = x.unbind(-1)
    assert x0.min() >= -4 and x0.max() <= 4
    assert (x0.mean()).abs() < 0.05 and (x0.var() - 16 / 3).abs() < 0.1
    r = x1 - 3 * torch.cos(2 * x0)
    assert r.mean().abs() < 0.02 and (r.var() - 1).abs() < 0.02
    assert torch.corrcoef(torch.stack([r, x0]))[0, 1].abs() < 0.02


@pytest.mark.parametrize("name", sorted(MVL_DATASETS_2D))
def test_log_prob_normalised(name):
    # midpoint quadrature on a box holding all the mass
    n = 801
    box = {"mvl-banana": ((-6.0, -6.0), (6.0, 40.0)), "cosine": ((-4.0, -9.0), (4.0, 9.0))}
    lo, hi = box[name]
    g0 = torch.linspace(lo[0], hi[0], n + 1, dtype=torch.float64)
    g1 = torch.linspace(lo[1], hi[1], n + 1, dtype=torch.float64)
    c0, c1 = (g0[1:] + g0[:-1]) / 2, (g1[1:] + g1[:-1]) / 2
    grid = torch.stack(torch.meshgrid(c0, c1, indexing="ij"), -1)
    area = (g0[1] - g0[0]) * (g1[1] - g1[0])
    total = mvl_log_prob(name, grid).exp().sum() * area
    assert abs(float(total) - 1) < 2e-3


def test_log_prob_bad_input():
    with pytest.raises(ValueError, match="name"):
        mvl_log_prob("banana", torch.zeros(3, 2))
    with pytest.raises(ValueError, match="x must"):
        mvl_log_prob("cosine", torch.zeros(3, 3))
    assert mvl_log_prob("cosine", torch.tensor([5.0, 0.0])) == -math.inf


def test_cli_loader_by_name():
    train, test = load_dataset("cosine", num_train=50, num_test=20, seed=1)
    assert train.shape == (50, 2) and test.shape == (20, 2)
    assert torch.equal(train, make_2d("cosine", 50, seed=2))
