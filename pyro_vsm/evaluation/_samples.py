r"""Argument checks and the train / held-out split shared by the sample-based KL estimators
(:func:`~pyro_vsm.evaluation.density_ratio_kl`, :func:`~pyro_vsm.evaluation.density_model_kl`)."""

import contextlib
import numbers

import torch


def as_samples(t, name, min_size=2):
    r"""``t`` as an ``(n, d)`` floating tensor (``(n,)`` becomes ``(n, 1)``), else ``ValueError``
    naming the argument."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
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
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    return t.detach()


def check_int(value, name, low=1):
    r"""``value`` as an ``int >= low`` (bools rejected), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_float(value, name, low=0.0, high=None, low_open=False, high_open=False):
    r"""``value`` as a finite ``float`` in the given interval (bools rejected)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = v == v and abs(v) != float("inf")
        ok = ok and (v > low if low_open else v >= low)
        if high is not None:
            ok = ok and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        rng = f"{lo}{low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{name} must be a number in {rng}, got {value!r}")
    return float(value)


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
