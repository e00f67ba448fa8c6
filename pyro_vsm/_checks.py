r"""Argument checks shared across the package (bools are rejected wherever numbers are expected)."""

import math
import numbers
import operator

import torch

__all__ = [
    "as_call_args",
    "as_samples",
    "check_int",
    "check_positive",
    "check_real",
    "positive_int",
]


def positive_int(value, name):
    r"""``value`` as an ``int`` if it is a positive integer (not a bool), else ``ValueError``.

    :param value: the value to check.
    :param str name: the argument's name, for the message.
    """
    try:
        result = operator.index(value)
    except TypeError:
        result = None
    if isinstance(value, bool) or result is None or result < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return result


def check_int(value, name, low=1, high=None):
    r"""``value`` as an ``int`` if it is an integer in ``[low, high]`` (not a bool), else
    ``ValueError``.

    :param value: the value to check.
    :param str name: the argument's name, for the message.
    :param int low: the smallest allowed value (default 1).
    :param high: the largest allowed value (``None``: no upper bound).
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if not ok or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_positive(value, name, allow_none=False, allow_zero=False):
    r"""``value`` as a ``float`` if it is a finite positive (or non-negative) number.

    :param value: the value to check.
    :param str name: the argument's name, for the message.
    :param bool allow_none: accept ``None`` (returned as is).
    :param bool allow_zero: accept 0.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a {kind} finite number{extra}, got {value!r}")
    return float(value)


def check_real(value, name, low=-math.inf, high=math.inf, low_open=False, high_open=False):
    r"""``value`` as a finite ``float`` in the interval from ``low`` to ``high`` (bools rejected),
    else ``ValueError``.

    :param value: the value to check.
    :param str name: the argument's name, for the message.
    :param float low: the lower end of the interval.
    :param float high: the upper end of the interval.
    :param bool low_open: exclude ``low``.
    :param bool high_open: exclude ``high``.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > low if low_open else v >= low)
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def as_samples(t, name, min_size=1, check_finite=True):
    r"""``t`` as an ``(n, d)`` floating tensor of finite samples (``(n,)`` becomes ``(n, 1)``).

    :param t: the samples.
    :param str name: the argument's name, for the message.
    :param int min_size: the least number of samples.
    :param bool check_finite: check that the values are finite (one host synchronisation).
    :raises TypeError: when ``t`` is not a tensor.
    :raises ValueError: for a wrong dtype or shape, too few samples or non-finite values.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a real floating-point dtype, got {t.dtype}")
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    elif t.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(t.shape)}")
    if t.shape[0] < min_size:
        raise ValueError(f"{name} needs at least {min_size} samples, got {t.shape[0]}")
    if check_finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    return t


def as_call_args(data, kwargs, name):
    r"""``(args, kwargs)`` of held-out data for a model: a tensor is one positional argument.

    :param data: ``None``, a tensor, or a tuple/list of arguments.
    :param dict kwargs: keyword arguments, or ``None``.
    :param str name: the argument's name, for the message.
    """
    if data is None:
        return None
    if isinstance(data, torch.Tensor):
        args = (data,)
    elif isinstance(data, tuple | list):
        args = tuple(data)
    else:
        raise TypeError(f"{name} must be a tensor or a tuple of model arguments, got {type(data)}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"{name[:-4]}kwargs must be a dict, got {type(kwargs).__name__}")
    return args, dict(kwargs or {})
