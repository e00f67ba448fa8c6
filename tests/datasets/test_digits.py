import builtins

import pytest
import torch

from pyro_vsm.datasets import load_digits

pytest.importorskip("sklearn")


def test_shapes_split_and_binary_values():
    train, test = load_digits()
    assert train.shape == (1437, 64) and test.shape == (360, 64)
    assert train.dtype == torch.float32
    for x in (train, test):
        assert set(x.unique().tolist()) == {0.0, 1.0}
    # the split is a partition of the 1797 images: no image lost (as multisets of rows of the
    # continuous version, which identify images up to exact duplicates)
    tr, te = load_digits(binarize=False)
    both = torch.cat([tr, te])
    from sklearn.datasets import load_digits as sk

    ref = torch.as_tensor(sk().data, dtype=torch.float32) / 16
    key = lambda a: sorted(map(tuple, a.tolist()))  # noqa: E731
    assert key(both) == key(ref)
    assert ((tr > 0.5).float() == train).all()


def test_deterministic():
    a = load_digits(binarize="stochastic", seed=3)
    b = load_digits(binarize="stochastic", seed=3)
    c = load_digits(binarize="stochastic", seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    # the split does not depend on the noise seed
    t3, t4 = load_digits(seed=3), load_digits(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(t3, t4, strict=True))
    assert not torch.equal(load_digits(split_seed=1)[1], t3[1])


def test_stochastic_binarisation_rate():
    (train, _), (cont, _) = load_digits(binarize="stochastic"), load_digits(binarize=False)
    assert set(train.unique().tolist()) <= {0.0, 1.0}
    # pixel means of the Bernoulli draws match the intensities (1437 * 64 draws)
    assert abs(train.mean().item() - cont.mean().item()) < 0.01


def test_dequantized_values_and_options():
    train, test = load_digits(binarize=False, dequantize=True, dtype=torch.float64)
    assert train.dtype == torch.float64
    assert 0 < train.min() and train.max() < 1
    levels, _ = load_digits(binarize=False)
    # each value lies in its level's interval [pixel/17, (pixel+1)/17)
    pixel = torch.round(levels.double() * 16)
    assert ((train * 17 - pixel >= 0) & (train * 17 - pixel < 1)).all()
    x_tr, x_te, y_tr, y_te = load_digits(return_labels=True, num_test=97)
    assert x_te.shape == (97, 64) and y_tr.shape == (1700,) and y_te.dtype == torch.int64
    assert set(y_tr.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="exclusive"):
        load_digits(binarize=True, dequantize=True)
    with pytest.raises(ValueError, match="binarize"):
        load_digits(binarize="sometimes")
    with pytest.raises(ValueError, match="num_test"):
        load_digits(num_test=1797)


def test_missing_sklearn_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pyro-vsm\[digits\]"):
        load_digits()
