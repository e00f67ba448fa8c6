r"""Training loops and thread settings of the command line.

**Threads.** The models of the main job are tiny (a few thousand parameters): an intra-op thread
pool only adds synchronisation to each of the many small operations of a step, and collapses
(tens of times slower) as soon as another process competes for the cores. :func:`auto_threads`
therefore gives one thread unless one step's matrix products are large (parameters × batch
size above :data:`MULTI_THREAD_WORK`), and ``compare`` runs every objective in its own
single-threaded worker process instead.
"""

import contextlib
import math
import os
import sys
import time
import warnings

import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from ..optim import ForeachAdam

__all__ = [
    "auto_threads",
    "available_cores",
    "num_threads",
    "train_built",
    "train_steps",
    "train_vae",
]

#: parameters × batch size above which a step's matrix products are worth several threads
MULTI_THREAD_WORK = 2e7


def available_cores():
    r"""The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_threads(modules, batch_size):
    r"""1 for small models, else the available cores (at most 8).

    :param modules: the model and guide (``torch.nn.Module`` s).
    :param int batch_size: points per step.
    """
    params = sum(p.numel() for m in modules for p in m.parameters())
    if params * batch_size < MULTI_THREAD_WORK:
        return 1
    return min(available_cores(), 8)


@contextlib.contextmanager
def num_threads(n):
    r"""Runs the block with ``torch.set_num_threads(n)`` and restores the setting afterwards.

    :param int n: the number of intra-op threads.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quarter_lines(desc, start, steps):
    marks = {start + (steps - start) * k // 4 for k in (1, 2, 3, 4)}

    def report(step):
        if step in marks:
            print(f"{desc}: step {step}/{steps}", file=sys.stderr, flush=True)

    return report


def train_steps(
    svi,
    x_train,
    steps,
    batch_size,
    *,
    start=0,
    progress=False,
    desc=None,
    callback=None,
    steps_per_batch=1,
    seed=0,
):
    r"""``svi.step`` on minibatches drawn with replacement (``num_data`` set for plate scaling).

    :param svi: the ``SVI`` object.
    :param x_train: the training data (first dimension: points).
    :param int steps: the step to stop at.
    :param int batch_size: points per step.
    :param int start: the step to start from.
    :param progress: ``True``: a tqdm bar on a terminal, a line per quarter of the run on other
        streams; or a callable ``progress(step)`` called after every step.
    :param str desc: the bar's label.
    :param callback: ``callback(step)`` after every step (``step`` counts from ``start + 1``).
    :param int steps_per_batch: consecutive steps on one minibatch; above 1 the minibatch of
        steps ``[k m, (k + 1) m)`` is drawn by a generator seeded with ``(seed, k)``, so a run
        resumed at any step sees the same minibatches as an uninterrupted one.
    :param int seed: the seed of those minibatches.
    :raises FloatingPointError: when a step returns a non-finite loss.
    """
    n = x_train.shape[0]
    report = progress if callable(progress) else None
    terminal = progress is True and sys.stderr.isatty()
    if progress is True and not terminal:  # a log file: a line per quarter, not every refresh
        report = _quarter_lines(desc or "training", start, steps)
    bar = tqdm(
        total=steps, initial=start, desc=desc, disable=not terminal, leave=False, mininterval=0.5
    )
    with bar, warnings.catch_warnings():
        # a non-finite value raises below; Pyro's own warning about it would only repeat that
        warnings.filterwarnings("ignore", message="Encountered NaN")
        for step in range(start, steps):
            if steps_per_batch == 1:
                idx = torch.randint(n, (batch_size,), device=x_train.device)
            elif step == start or step % steps_per_batch == 0:
                g = torch.Generator().manual_seed(seed * 1_000_003 + step // steps_per_batch)
                idx = torch.randint(n, (batch_size,), generator=g).to(x_train.device)
            value = svi.step(x_train[idx], num_data=n)
            if not math.isfinite(value):  # a loss without its own check (e.g. Trace_ELBO)
                raise FloatingPointError(f"non-finite loss ({value}) at step {step + 1}")
            bar.update(1)
            if report is not None:
                report(step + 1)
            if callback is not None:
                callback(step + 1)


def train_built(
    built, x_train, batch_size, *, start=0, progress=False, desc=None, callback=None, seed=0
):
    r"""Trains a :class:`~pyro_vsm.experiments.registry.Built` objective for its ``steps``.

    :param Built built: model, guide, loss and optimiser.
    :param x_train: the training data.
    :param int batch_size: points per step.
    :param int start: the step to start from (resuming).
    :param progress: see :func:`train_steps`.
    :param str desc: the bar's label.
    :param callback: see :func:`train_steps`.
    :param int seed: the seed of the minibatches of a ``steps_per_batch`` above 1.
    """
    svi = SVI(built.model, built.guide, built.optim, loss=built.loss)
    train_steps(
        svi,
        x_train,
        built.steps,
        batch_size,
        start=start,
        progress=progress,
        desc=desc,
        callback=callback,
        steps_per_batch=built.steps_per_batch,
        seed=seed,
    )
    return svi


def train_vae(
    loss,
    x_train,
    *,
    steps,
    batch_size,
    lr,
    hidden=(30, 30),
    latent_dim=2,
    seed=0,
    progress=False,
    desc=None,
):
    r"""Trains a fresh ``GaussianVAE.mlp``/``DiagonalNormalEncoder.mlp`` pair with ``loss`` and
    Adam; returns ``(model, guide, seconds)``.

    :param loss: the ``pyro.infer.ELBO``.
    :param x_train: ``(n, d)`` training data.
    :param int steps: ``svi.step`` calls.
    :param int batch_size: points per step.
    :param float lr: Adam's learning rate.
    :param hidden: hidden widths.
    :param int latent_dim: latent dimension.
    :param int seed: seed of the initialisation and the minibatches.
    :param bool progress: show a progress bar.
    :param str desc: its label.
    """
    from .vae import build_vae

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = build_vae(
        x_train.shape[-1], latent_dim, hidden, dtype=x_train.dtype, device=x_train.device
    )
    svi = SVI(model, guide, ForeachAdam({"lr": lr}), loss=loss)
    start = time.perf_counter()
    train_steps(svi, x_train, steps, batch_size, progress=progress, desc=desc)
    return model, guide, time.perf_counter() - start
