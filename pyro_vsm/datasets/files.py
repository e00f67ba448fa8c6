"""Data sets by name or path, for the ``pyro-vsm`` command.

:func:`load_dataset` resolves, in order:

* a built-in 2-D set (:data:`~pyro_vsm.datasets.synthetic.DATASETS_2D`), drawn with disjoint seeds
  for the training and the held-out split;
* ``"digits"``: scikit-learn's bundled 8×8 digits (optional ``[digits]`` extra), dequantised and
  scaled to [0, 1];
* ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``: torchvision data sets **already present** under
  ``data_root`` (optional ``[vision]`` extra; nothing is downloaded unless ``download=True``);
* with ``image=True`` the image sets come as ``(n, channels, height, width)`` tensors
  (:func:`image_shape`), e.g. for convolutional models; by default every set is ``(n, d)``;
* a path to the user's own ``.npy``, ``.npz`` (the array named ``x``, ``data`` or the only one) or
  ``.csv`` (comma-separated numbers, optional header row) file holding an ``(n, d)`` array, split
  into training and held-out points by a seeded permutation.
"""

import os

import numpy as np
import torch

from .synthetic import _ALIASES_2D, DATASETS_2D, make_2d

VISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
#: ``(channels, height, width)`` of one image of each image set
IMAGE_SHAPES = {
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
FILE_SUFFIXES = (".npy", ".npz", ".csv")


def image_shape(name):
    """``(channels, height, width)`` of one image of an image data set, ``None`` for the others
    (2-D sets and files, whose observations are flat vectors).

    :param str name: a data set name or file path.
    """
    return IMAGE_SHAPES.get(name)


def load_array(path):
    """An ``(n, d)`` float64 NumPy array from a ``.npy``, ``.npz`` or ``.csv`` file.

    :raises FileNotFoundError: when the file does not exist.
    :raises ValueError: for other suffixes, unreadable contents, non-finite values or a shape that
        is not ``(n, d)`` (a 1-D array is read as ``d = 1``).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                key = next((k for k in ("x", "data") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise ValueError(
                        f"{path}: name the array 'x' or 'data' (found {', '.join(keys) or 'none'})"
                    )
                array = archive[key]
        elif suffix == ".csv":
            try:
                array = np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:
                array = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)  # a header row
        else:
            raise ValueError(
                f"{path}: unsupported file type; use one of {', '.join(FILE_SUFFIXES)}"
            )
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read the data ({e})") from e
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{path}: expected an (n, d) array with n >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: the data contain NaN or infinite values")
    return array


def _split(array, num_train, num_test, seed):
    perm = np.random.default_rng(seed).permutation(array.shape[0])
    n_test = min(num_test, array.shape[0] // 5) if num_test else array.shape[0] // 5
    n_test = max(n_test, 1)
    test, rest = perm[:n_test], perm[n_test:]
    train = rest[:num_train] if num_train else rest
    return array[train], array[test]


def _vision(name, data_root, download):
    try:
        import torchvision
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise ValueError(
            f"dataset {name!r} needs torchvision (pip install 'pyro-vsm[vision]'): {e}"
        ) from e
    cls = getattr(torchvision.datasets, VISION_DATASETS[name])
    try:
        train = cls(data_root, train=True, download=download)
        test = cls(data_root, train=False, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"dataset {name!r} not found under {data_root!r} (pass --download to fetch it): {e}"
        ) from e

    def to_array(ds):
        data = ds.data if torch.is_tensor(ds.data) else torch.as_tensor(np.asarray(ds.data))
        if data.dim() == 4:  # CIFAR-10 stores (n, H, W, C): flatten in (C, H, W) order
            data = data.permute(0, 3, 1, 2)
        return data.reshape(data.shape[0], -1).double().numpy() / 255.0

    return to_array(train), to_array(test)


def load_dataset(
    name,
    num_train=None,
    num_test=None,
    seed=0,
    dtype=torch.float32,
    device=None,
    data_root="data",
    download=False,
    image=False,
):
    """``(x_train, x_test)`` tensors of shape ``(n, d)`` for a data set name or file path.

    :param str name: a built-in 2-D set, ``"digits"``, a torchvision name or a file path.
    :param int num_train: training points (required for built-in 2-D sets; for files and image
        sets at most this many, default all).
    :param int num_test: held-out points (for files, default a fifth of the file).
    :param int seed: fixes the synthetic draws and the split of files.
    :param bool image: return image sets as ``(n,) + image_shape(name)`` tensors (a
        ``ValueError`` for the other sets).
    """
    if image and image_shape(name) is None:
        raise ValueError(
            f"dataset {name!r} has no image shape (image sets: {', '.join(IMAGE_SHAPES)})"
        )
    if name in DATASETS_2D or name in _ALIASES_2D:
        if not num_train or not num_test:
            raise ValueError("built-in 2-D data sets need num_train and num_test")
        train = make_2d(name, num_train, seed=2 * seed, dtype=dtype, device=device)
        test = make_2d(name, num_test, seed=2 * seed + 1, dtype=dtype, device=device)
        return train, test
    if name == "digits":
        from .digits import load_digits

        train, test = load_digits(binarize=False, dequantize=True, seed=seed, dtype=torch.float64)
        train, test = train.numpy(), test.numpy()
    elif name in VISION_DATASETS:
        train, test = _vision(name, data_root, download)
    elif os.path.splitext(name)[1].lower() in FILE_SUFFIXES or os.path.sep in name:
        train, test = _split(load_array(name), num_train, num_test, seed)
        num_train = num_test = None  # already applied
    else:
        raise ValueError(
            f"unknown dataset {name!r}: use one of {', '.join(sorted(DATASETS_2D))}, digits, "
            f"{', '.join(VISION_DATASETS)}, or a path to a {'/'.join(FILE_SUFFIXES)} file"
        )
    if num_train:
        train = train[:num_train]
    if num_test:
        test = test[:num_test]
    shape = image_shape(name) if image else None

    def as_tensor(a):
        t = torch.as_tensor(a, dtype=dtype, device=device)
        return t if shape is None else t.reshape((t.shape[0],) + shape)

    return as_tensor(train), as_tensor(test)
