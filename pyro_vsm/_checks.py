"""Argument checks shared across the package."""

import operator


def positive_int(value, name):
    """``value`` as an ``int`` if it is a positive integer (not a bool), else ``ValueError``."""
    try:
        result = operator.index(value)
    except TypeError:
        result = None
    if isinstance(value, bool) or result is None or result < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return result
