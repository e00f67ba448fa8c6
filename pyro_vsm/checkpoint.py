r"""Training checkpoints: model, guide, optimizer and loss state, step and RNG state.

Checkpoints are plain dictionaries of tensors and Python scalars written with :func:`torch.save`
and read with ``torch.load(weights_only=True)``, so loading never unpickles arbitrary objects.
Resuming from a checkpoint continues exactly where the run stopped: with the same seed, a resumed
run ends with the same parameters as an uninterrupted one.
"""

import os

import torch

FORMAT = "pyro-vsm-checkpoint"
VERSION = 2
#: versions :func:`load_checkpoint` reads; version 1 held only the loss's schedule
SUPPORTED_VERSIONS = (1, 2)
_KEYS = {
    1: ("config", "step", "model", "guide", "optim", "schedule", "torch_rng"),
    2: ("config", "step", "model", "guide", "optim", "loss", "torch_rng"),
}


def save_checkpoint(path, *, config, step, model, guide, optim, loss=None):
    r"""Writes a checkpoint atomically (a temporary file renamed over ``path``).

    :param str path: the file to write (its directory is created).
    :param dict config: JSON-like run configuration (data set, loss, architecture, optimizer).
    :param int step: number of ``svi.step`` calls taken.
    :param model: the model, a ``torch.nn.Module`` (e.g. a :class:`~pyro.nn.PyroModule`).
    :param guide: the guide, a ``torch.nn.Module``.
    :param optim: the :class:`~pyro.optim.PyroOptim` used by SVI.
    :param loss: the loss; its ``state_dict()`` is saved when it has one (every pyro-vsm loss
        does: step counters, phases, rounds, best-round snapshots and owned modules).
    """
    state_dict = getattr(loss, "state_dict", None)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": dict(config),
        "step": int(step),
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "optim": optim.get_state(),
        "loss": state_dict() if callable(state_dict) else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    r"""Reads a checkpoint with ``torch.load(weights_only=True)``.

    :param str path: the checkpoint file.
    :param map_location: as for :func:`torch.load`.
    :returns: the checkpoint's dictionary (pass it to :func:`restore`).
    :raises FileNotFoundError: when ``path`` does not exist.
    :raises ValueError: when the file is not a readable pyro-vsm checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a torch file
        raise ValueError(f"{path}: not a readable pyro-vsm checkpoint ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pyro-vsm checkpoint")
    version = state.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{path}: checkpoint version {version} is not supported (this pyro-vsm reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    missing = [k for k in _KEYS[version] if k not in state]
    if missing:
        raise ValueError(f"{path}: incomplete checkpoint (missing {', '.join(missing)})")
    return state


def restore(state, *, model, guide, optim, loss=None, rng=True):
    r"""Loads a checkpoint's state into freshly built objects (and the RNG, with ``rng=True``).

    A loss that builds modules on its first call needs ``loss.prepare(model, guide, *args)``
    before this. A version-1 checkpoint restores only the loss's schedule (all that version held).

    :param dict state: a checkpoint from :func:`load_checkpoint`.
    :param model: the model, a ``torch.nn.Module``.
    :param guide: the guide, a ``torch.nn.Module``.
    :param optim: the :class:`~pyro.optim.PyroOptim` used by SVI.
    :param loss: the loss whose state is restored (``None``: not restored).
    :param bool rng: also restore torch's (and CUDA's) random number generator state.
    """
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    optim.set_state(state["optim"])
    if loss is not None:
        if state["version"] == 1:
            schedule = getattr(loss, "schedule", None)
            if schedule is not None and state["schedule"] is not None:
                schedule.load_state_dict(state["schedule"])
        elif state["loss"] is not None and callable(getattr(loss, "load_state_dict", None)):
            loss.load_state_dict(state["loss"])
    if rng:
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
