r"""Argument checks and the train / held-out split shared by the sample-based KL estimators
(:func:`~pyro_vsm.evaluation.density_ratio_kl`, :func:`~pyro_vsm.evaluation.density_model_kl`)."""

import contextlib
import math

import torch

from .._checks import as_samples as _as_samples
from .._checks import check_int, check_real


def as_samples(t, name, min_size=2):
    r"""``t`` as a detached ``(n, d)`` floating tensor of at least ``min_size`` finite samples.

    :param t: the samples.
    :param str name: the argument's name, for the message.
    :param int min_size: the least number of samples.
    """
    return _as_samples(t, name, min_size).detach()


def check_float(value, name, low=0.0, high=None, low_open=False, high_open=False):
    r"""``value`` as a finite float in the interval (``high=None``: unbounded above).

    :param value: the value to check.
    :param str name: the argument's name, for the message.
    :param float low: the lower end.
    :param high: the upper end, or ``None``.
    :param bool low_open: exclude ``low``.
    :param bool high_open: exclude ``high``.
    """
    high = math.inf if high is None else high
    return check_real(value, name, low, high, low_open, high_open)


def make_generator(seed, generator, device):
    r"""The generator of the estimator's randomness: ``generator`` as given, a new one on
    ``device`` seeded with ``seed``, or ``None`` (the global RNG)."""
    if seed is not None and generator is not None:
        raise ValueError("pass at most one of seed and generator")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
        return generator
    if seed is not None:
        seed = check_int(seed, "seed", low=0)
        return torch.Generator(device=device).manual_seed(seed)
    return None


def gen_device(generator, like):
    return like.device if generator is None else generator.device


def randint(high, size, generator, like):
    r"""``torch.randint`` drawn with ``generator`` (on its device) and moved to ``like``'s."""
    idx = torch.randint(high, size, generator=generator, device=gen_device(generator, like))
    return idx.to(like.device)


def rand_like(shape, generator, like, normal=False):
    r"""Uniform (or standard normal) draws of ``shape`` with ``like``'s dtype and device."""
    draw = torch.randn if normal else torch.rand
    out = draw(shape, generator=generator, device=gen_device(generator, like), dtype=like.dtype)
    return out.to(like.device)


def split(x, holdout, generator, name):
    r"""A random ``(train, heldout)`` split of the rows of ``x`` with ``round(holdout * n)`` (at
    least one) held-out rows and at least one training row."""
    n = x.shape[0]
    n_hold = min(max(1, round(holdout * n)), n - 1)
    gdev = gen_device(generator, x)
    perm = torch.randperm(n, generator=generator, device=gdev).to(x.device)
    if n - n_hold < 1:  # pragma: no cover - as_samples asks for two rows
        raise ValueError(f"{name} has too few samples to hold out {n_hold}")
    return x[perm[n_hold:]], x[perm[:n_hold]], perm


@contextlib.contextmanager
def seeded_init(generator, like):
    r"""Seeds the global CPU RNG from ``generator`` (restoring it afterwards) so that modules built
    inside get a reproducible initialisation; without a generator, the global RNG is used as is.
    Build the modules on the CPU inside and move them to the samples' device afterwards."""
    if generator is None:
        yield
        return
    seed = randint(2**62, (1,), generator, like).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
