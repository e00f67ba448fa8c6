r"""Scikit-learn's bundled 8×8 handwritten digits as flat 64-d tensors (no download).

:func:`load_digits` reads ``sklearn.datasets.load_digits`` -- 1797 images of 8×8 pixels with
integer intensities 0..16 (the test part of the UCI "Optical Recognition of Handwritten Digits"
set), shipped inside the scikit-learn package -- and returns a ``(train, test)`` pair of
``(n, 64)`` tensors. scikit-learn is an optional dependency: ``pip install "pyro-vsm[digits]"``.

**Split.** A fixed random permutation (``numpy.random.default_rng(split_seed)``, default 0,
independent of ``seed``) puts ``num_test`` = 360 images (about 20 %) in the test set and the
other 1437 in the training set, in permuted order.

**Values** (``p = pixel / 16`` in :math:`[0, 1]`):

* ``binarize=True`` or ``"threshold"`` (default): :math:`\mathbb 1\{p > 0.5\}`, deterministic;
* ``binarize="stochastic"``: :math:`\mathbb 1\{u < p\}` with :math:`u \sim U(0, 1)` drawn once
  per pixel with ``numpy.random.default_rng(seed)`` (a fixed, "statically" binarised copy; for
  dynamic binarisation use ``binarize=False`` and draw ``torch.bernoulli`` per batch);
* ``binarize=False, dequantize=False``: :math:`p` itself;
* ``binarize=False, dequantize=True``: :math:`(\text{pixel} + u)/17` with
  :math:`u \sim U(0, 1)` drawn with ``default_rng(seed)``, i.e. uniform dequantisation of the 17
  intensity levels onto :math:`(0, 1)` (Theis et al. [1]): a continuous density on
  :math:`(0, 1)^{64}` whose log-likelihoods bound those of the discrete data (Jensen):
  :math:`\log P(\text{pixels}) \ge \mathbb E_u[\log p(x)] - 64\log 17`.

The noise is drawn for the whole set (train and test, in the original order) before the split,
so a given ``seed`` gives the same value to an image whichever part it lands in. All arithmetic is
float64 on the CPU; the result is converted to ``dtype``/``device`` at the end.

References:

[1] `A note on the evaluation of generative models`,
    Lucas Theis, Aäron van den Oord, Matthias Bethge (2016)
"""

import numpy as np
import torch

__all__ = ["DIGITS_SHAPE", "load_digits"]

#: Shape of one image (observations are flattened to 64 values).
DIGITS_SHAPE = (8, 8)
_LEVELS = 16  # maximum pixel value


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "pyro_vsm.datasets.load_digits needs scikit-learn (its bundled 8x8 digits); install "
            'the optional extra: pip install "pyro-vsm[digits]"'
        ) from e
    data = sk_load_digits()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target)


def load_digits(
    binarize=True,
    dequantize=False,
    seed=0,
    dtype=torch.float32,
    device=None,
    *,
    num_test=360,
    split_seed=0,
    return_labels=False,
):
    r"""``(train, test)``: the 8×8 digits as ``(1437, 64)`` and ``(360, 64)`` tensors.

    :param binarize: ``True``/``"threshold"`` (pixel/16 > 0.5), ``"stochastic"`` (Bernoulli
        with probability pixel/16, drawn with ``seed``) or ``False``.
    :param bool dequantize: with ``binarize=False``: ``(pixel + U(0,1)) / 17`` instead of
        ``pixel / 16``.
    :param int seed: seed of the binarisation / dequantisation noise.
    :param torch.dtype dtype: dtype of the result.
    :param torch.device device: device of the result.
    :param int num_test: size of the test set (``0 < num_test < 1797``).
    :param int split_seed: seed of the train/test permutation.
    :param bool return_labels: also return the digit classes, ``(train, test, y_train, y_test)``
        (int64 tensors on ``device``).
    :raises ImportError: when scikit-learn is not installed.
    """
    if binarize is True:
        binarize = "threshold"
    if binarize not in (False, None, "threshold", "stochastic"):
        raise ValueError(
            f"binarize must be True, False, 'threshold' or 'stochastic', got {binarize!r}"
        )
    if binarize and dequantize:
        raise ValueError("load_digits: binarize and dequantize are exclusive")
    pixels, labels = _sklearn_digits()
    n = pixels.shape[0]
    num_test = int(num_test)
    if not 0 < num_test < n:
        raise ValueError(f"num_test must be in (0, {n}), got {num_test}")
    rng = np.random.default_rng(seed)
    if binarize == "threshold":
        x = (pixels / _LEVELS > 0.5).astype(np.float64)
    elif binarize == "stochastic":
        x = (rng.uniform(size=pixels.shape) < pixels / _LEVELS).astype(np.float64)
    elif dequantize:
        x = (pixels + rng.uniform(size=pixels.shape)) / (_LEVELS + 1)
    else:
        x = pixels / _LEVELS
    order = np.random.default_rng(split_seed).permutation(n)
    test_idx, train_idx = order[:num_test], order[num_test:]

    def tensor(a, kind=dtype):
        return torch.as_tensor(a, dtype=kind, device=device)

    out = (tensor(x[train_idx]), tensor(x[test_idx]))
    if return_labels:
        out += (tensor(labels[train_idx], torch.int64), tensor(labels[test_idx], torch.int64))
    return out
