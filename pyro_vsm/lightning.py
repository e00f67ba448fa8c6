r"""Data-parallel training of any (model, guide, loss) on PyTorch Lightning (``[lightning]`` extra).

Pyro's Lightning pattern (``pyro.settings.set(module_local_params=True)``, the
:class:`~pyro.infer.elbo.ELBOModule` ``loss(model, guide)``, a torch optimizer) as one reusable
module, with what a loss with parameter groups needs on several processes:

* **The strategy.** A grouped loss routes each step's gradient to the groups of its phase, so the
  other parameters get no gradient; DDP must then be told to look for unused parameters
  (``strategy="ddp_find_unused_parameters_true"``, :func:`strategy_for`). Parameters no process
  used keep ``grad = None`` after the reduction, which torch optimizers skip. Plain ``"ddp"``
  with a loss whose phases leave parameters untouched stops in ``setup`` with a one-line error.
* **Scaling.** DDP averages the processes' gradients, so each process scales its minibatch to the
  *whole* data set: ``num_data`` is passed to model and guide on every process.
* **Collective checks.** The loss checks its values (:attr:`GroupedLoss.check_finite
  <pyro_vsm.infer.GroupedLoss>`), and ``training_step`` reduces "did this process fail" across
  processes before the backward pass, so a non-finite loss (or any error) on one process raises
  on every process instead of leaving the others waiting in the gradient all-reduce.
* **Same decisions.** The loss reduces every decision it takes from data across processes
  (:mod:`pyro_vsm.infer.distributed`), so all processes take the same phase and hold the same
  elements fixed; the parameters stay identical without DDP re-broadcasting them.
* **Modules the loss builds** (the adversarial prior's flow) are built in ``setup`` by
  ``loss.prepare``, before DDP wraps the module and the optimizer is configured.
* **Checkpoints** hold the loss's ``state_dict()`` and each process's random-number state, so a
  run resumed at an epoch boundary equals an uninterrupted one.

Several GPUs: ``Trainer(accelerator="gpu", devices=4, strategy=strategy_for(loss))``; several
machines: add ``num_nodes`` and start the script on each machine as Lightning documents (only CPU
processes are tested here)."""

import os
import warnings

import torch

try:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pyro_vsm.lightning needs PyTorch Lightning: pip install 'pyro-vsm[lightning]'"
    ) from e
import pyro
import torch.distributed as dist
from pyro import poutine

from ._checks import check_int, check_positive
from .errors import NonFiniteLossError
from .infer import GroupedLoss, SinglePhase
from .infer.distributed import max_over_processes, world_size

__all__ = [
    "ReplacementSampler",
    "TrainingModule",
    "build_trainer",
    "fit_minibatches",
    "strategy_for",
]

#: the strategy string DDP needs for a loss that leaves parameters without a gradient
FIND_UNUSED = "ddp_find_unused_parameters_true"
_FAILED, _NON_FINITE = 2.0, 1.0


def _routes_by_phase(loss):
    return isinstance(loss, GroupedLoss) and not isinstance(loss.schedule, SinglePhase)


def strategy_for(loss):
    r"""The Lightning strategy for ``loss`` on several processes: DDP that looks for unused
    parameters for the losses with parameter groups, plain ``"ddp"`` otherwise.

    :param loss: a :class:`pyro.infer.ELBO`.
    """
    return FIND_UNUSED if isinstance(loss, GroupedLoss) else "ddp"


def _check_strategy(loss, strategy):
    if not (_routes_by_phase(loss) and isinstance(strategy, DDPStrategy)):
        return
    if not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False):
        raise ValueError(
            f"{type(loss).__name__} updates one parameter group per step, which plain DDP rejects; "
            f"use strategy={FIND_UNUSED!r} (pyro_vsm.lightning.strategy_for(loss))"
        )


def _call_args(batch):
    return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)


class TrainingModule(pl.LightningModule):
    r"""A :class:`~lightning.pytorch.LightningModule` training ``model`` and ``guide`` with any
    Pyro loss (see the module docstring).

    Build model and guide after ``pyro.settings.set(module_local_params=True)``. Each batch of
    the train dataloader is passed to model and guide as their positional arguments (a tensor,
    or the tuple a ``TensorDataset`` yields), with ``num_data=num_data`` when it is given.
    ``training_step`` logs the step's value as ``"loss"`` and each entry of the loss's
    ``last_terms`` (the objectives of the step's phase and their parts).

    :param model: the model (a ``torch.nn.Module``, e.g. a ``PyroModule``).
    :param guide: the guide (a ``torch.nn.Module``).
    :param loss: a :class:`pyro.infer.ELBO` (any pyro-vsm loss, ``Trace_ELBO``, ...).
    :param optimizer: ``optimizer(params)`` returning a torch optimizer (default: Adam).
    :param float lr: the learning rate of the default optimizer.
    :param int num_data: the size of the whole data set, passed as ``num_data=`` on every
        process (``None``: not passed).
    :param int seed: seeds process ``r``'s random numbers with ``seed + r`` in ``setup``
        (``None``: left alone).
    :param example: a batch for ``loss.prepare`` (default: the first batch of the train
        dataloader, read in ``setup``).
    :param bool check_finite: stop on a non-finite loss before the backward pass, on every
        process together (sets ``loss.check_finite`` of a grouped loss; one host
        synchronisation per step).
    """

    def __init__(
        self,
        model,
        guide,
        loss,
        *,
        optimizer=None,
        lr=1e-3,
        num_data=None,
        seed=None,
        example=None,
        check_finite=True,
    ):
        super().__init__()
        if not pyro.settings.get("module_local_params"):
            raise ValueError(
                "TrainingModule: call pyro.settings.set(module_local_params=True) before building "
                "the model and guide"
            )
        if not isinstance(loss, pyro.infer.ELBO):
            raise ValueError(f"loss must be a pyro.infer.ELBO, got {type(loss).__name__}")
        if optimizer is not None and not callable(optimizer):
            raise ValueError(f"optimizer must be callable (params -> optimizer), got {optimizer!r}")
        if not isinstance(check_finite, bool):
            raise ValueError(f"check_finite must be a bool, got {check_finite!r}")
        self.loss = loss
        self.elbo = loss(model, guide)
        self.optimizer = optimizer
        self.lr = check_positive(lr, "lr")
        self.num_data = None if num_data is None else check_int(num_data, "num_data", 1)
        self.seed = None if seed is None else check_int(seed, "seed", 0)
        self.example = example
        self.check_finite = check_finite
        if isinstance(loss, GroupedLoss):
            loss.check_finite = check_finite

    @property
    def model(self):
        r"""The model."""
        return self.elbo.model

    @property
    def guide(self):
        r"""The guide."""
        return self.elbo.guide

    # -- set-up -----------------------------------------------------------------------------
    def _kwargs(self):
        return {} if self.num_data is None else {"num_data": self.num_data}

    def _first_batch(self):
        source = getattr(getattr(self.trainer, "fit_loop", None), "_data_source", None)
        try:
            loader = source.dataloader()
            return next(iter(loader))
        except Exception:  # noqa: BLE001 - no train dataloader to read from: nothing to prepare
            return None

    def setup(self, stage):
        _check_strategy(self.loss, self.trainer.strategy)
        example = self.example if self.example is not None else self._first_batch()
        if example is not None:
            args, kwargs = _call_args(example), self._kwargs()
            if not any(True for _ in self.guide.parameters()):  # e.g. an AutoGuide: build it
                with torch.no_grad(), poutine.block():
                    self.guide(*args, **kwargs)
            prepare = getattr(self.loss, "prepare", None)
            if callable(prepare):
                prepare(self.model, self.guide, *args, **kwargs)
        if self.seed is not None:
            pyro.set_rng_seed(self.seed + self.global_rank)

    def configure_optimizers(self):
        params = [p for p in self.elbo.parameters() if p.requires_grad]
        if self.optimizer is None:
            return torch.optim.Adam(params, lr=self.lr)
        return self.optimizer(params)

    # -- one step ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        args = _call_args(batch)
        step = getattr(self.loss, "step", self.global_step)
        status, failure = 0.0, None
        try:
            value = self.elbo(*args, **self._kwargs())
            if self.check_finite and not isinstance(self.loss, GroupedLoss):
                if not bool(torch.isfinite(value).all()):
                    raise NonFiniteLossError(
                        f"{type(self.loss).__name__}: non-finite loss ({float(value.detach())}) "
                        f"at step {step}. No parameter was updated."
                    )
        except NonFiniteLossError as e:
            status, failure = _NON_FINITE, e
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the others
            status, failure = _FAILED, e
        status = max_over_processes(status) if world_size() > 1 else status
        if failure is not None:
            raise failure
        if status == _NON_FINITE:
            raise NonFiniteLossError(
                f"{type(self.loss).__name__}: another process had a non-finite loss at step "
                f"{step}; no parameter was updated"
            )
        if status == _FAILED:
            raise RuntimeError(
                f"{type(self.loss).__name__}: another process failed at step {step} (see its error)"
            )
        size = args[0].shape[0] if args and torch.is_tensor(args[0]) else None
        self.log("loss", value.detach(), batch_size=size)
        terms = getattr(self.loss, "last_terms", {})
        scalars = {k: v for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1}
        if scalars:
            self.log_dict({k: v.reshape(()) for k, v in scalars.items()}, batch_size=size)
        return value

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint):
        state_dict = getattr(self.loss, "state_dict", None)
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        rng = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)
        if world_size() > 1:  # every process saves; rank 0 writes every process's state
            gathered = [None] * world_size()
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        checkpoint["pyro_vsm"] = {
            "loss": state_dict() if callable(state_dict) else None,
            "torch_rng": [cpu for cpu, _ in gathered],
            "cuda_rng": [gpu for _, gpu in gathered],
        }

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("pyro_vsm")
        if saved is None:
            return
        if saved["loss"] is not None:
            self.loss.load_state_dict(saved["loss"])
        if len(saved["torch_rng"]) != world_size():
            warnings.warn(
                f"the checkpoint holds the random state of {len(saved['torch_rng'])} processes, "
                f"not {world_size()}: random numbers are not restored",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        torch.set_rng_state(saved["torch_rng"][self.global_rank])
        cuda = saved["cuda_rng"][self.global_rank]
        if cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda)


def build_trainer(loss, *, devices=1, accelerator="auto", strategy="auto", num_nodes=1, **kwargs):
    r"""A :class:`~lightning.pytorch.Trainer` with the strategy ``loss`` needs.

    :param loss: the loss (a :class:`pyro.infer.ELBO`).
    :param devices: the number of processes per machine (or Lightning's device list).
    :param str accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"``.
    :param strategy: ``"auto"`` (:func:`strategy_for` on several processes, Lightning's
        default on one) or any Lightning strategy.
    :param int num_nodes: the number of machines.
    :param kwargs: further arguments of the ``Trainer``.
    """
    if strategy == "auto" and (devices not in (1, "1", "auto") or num_nodes > 1):
        strategy = strategy_for(loss)
    return pl.Trainer(
        devices=devices, accelerator=accelerator, strategy=strategy, num_nodes=num_nodes, **kwargs
    )


class ReplacementSampler(torch.utils.data.Sampler):
    r"""Minibatch indices drawn uniformly with replacement, independently on each process.

    Each epoch yields ``num_samples`` indices from a generator seeded by ``(seed, epoch,
    process rank)``, so an epoch's draws do not depend on the global random state and a run
    resumed at an epoch boundary draws what an uninterrupted one draws. Use it with
    ``Trainer(use_distributed_sampler=False)``.

    :param int num_data: the size of the data set.
    :param int num_samples: indices per epoch and process.
    :param int seed: the seed.
    """

    def __init__(self, num_data, num_samples, seed=0):
        self.num_data = check_int(num_data, "num_data", 1)
        self.num_samples = check_int(num_samples, "num_samples", 1)
        self.seed = check_int(seed, "seed", 0)
        self.epoch = 0

    def set_epoch(self, epoch):
        r"""Called by Lightning at the start of each epoch.

        :param int epoch: the epoch.
        """
        self.epoch = int(epoch)

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        rank = dist.get_rank() if world_size() > 1 else 0
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + rank)
        return iter(torch.randint(self.num_data, (self.num_samples,), generator=g).tolist())


def _save_pyro_vsm(path, config, trainer, module):
    from .checkpoint import save_checkpoint

    class _Optim:  # the torch optimizer's state where pyro-vsm's format holds Pyro's
        def get_state(self):
            return trainer.optimizers[0].state_dict()

    save_checkpoint(
        path,
        config=config,
        step=trainer.global_step,
        model=module.model,
        guide=module.guide,
        optim=_Optim(),
        loss=module.loss,
    )


class _Checkpoints(pl.Callback):
    # stops at `steps`; writes the Lightning checkpoint (resume) and, on rank 0, pyro-vsm's
    # (evaluate) at the end of each epoch and of training
    def __init__(self, folder, config, steps):
        self.folder, self.config, self.steps, self.saved = folder, config, steps, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step >= self.steps:
            trainer.should_stop = True

    def _save(self, trainer, module):
        if self.saved == trainer.global_step:
            return
        trainer.save_checkpoint(os.path.join(self.folder, "lightning.ckpt"))
        if trainer.is_global_zero:
            _save_pyro_vsm(os.path.join(self.folder, "checkpoint.pt"), self.config, trainer, module)
        trainer.strategy.barrier("pyro_vsm checkpoint.pt")  # written before any process reads it
        self.saved = trainer.global_step

    def on_train_epoch_end(self, trainer, module):
        self._save(trainer, module)

    def on_train_end(self, trainer, module):
        self._save(trainer, module)


def fit_minibatches(
    model,
    guide,
    loss,
    x,
    *,
    config,
    steps,
    devices,
    accelerator="auto",
    strategy="auto",
    checkpoint_every=500,
    folder=".",
    resume=False,
    progress=False,
):
    r"""``pyro-vsm train --devices N``: ``steps`` optimizer steps on minibatches of
    ``config["batch_size"]`` rows of ``x`` drawn with replacement, split evenly over the
    processes, with Adam (``config["lr"]``). An epoch is ``checkpoint_every`` steps (the last one
    may stop early); at the end of each epoch ``folder`` receives ``lightning.ckpt``
    (``resume=True`` continues from it with the next epoch; a run resumed at a multiple of
    ``checkpoint_every`` equals an uninterrupted one with the same ``checkpoint_every``) and, from
    process 0, pyro-vsm's ``checkpoint.pt`` (for ``pyro-vsm evaluate``).

    :param model: the model (built with ``module_local_params=True``).
    :param guide: the guide.
    :param loss: the loss.
    :param torch.Tensor x: the training data, ``(n, d)``.
    :param dict config: the run configuration (``batch_size``, ``lr``, ``seed``; saved).
    :param int steps: the number of optimizer steps to reach.
    :param int devices: the number of processes.
    :param str accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"``.
    :param str strategy: ``"auto"`` (:func:`strategy_for`) or ``"ddp"``.
    :param int checkpoint_every: steps per epoch and checkpoint.
    :param str folder: where the checkpoints are written.
    :param bool resume: continue from ``folder/lightning.ckpt``.
    :param bool progress: show Lightning's progress bar.
    """
    batch = config["batch_size"]
    if batch % devices:
        raise ValueError(f"--batch-size {batch} must be a multiple of --devices {devices}")
    if strategy == "ddp" and _routes_by_phase(loss):
        raise ValueError(
            f"--strategy ddp cannot train {type(loss).__name__}, which updates one parameter group "
            "per step; use --strategy auto"
        )
    per_process = batch // devices
    every = check_int(checkpoint_every, "checkpoint_every", 1)
    sampler = ReplacementSampler(x.shape[0], every * per_process, seed=config["seed"])
    data = torch.utils.data.TensorDataset(x.detach().cpu())
    loader = torch.utils.data.DataLoader(data, batch_size=per_process, sampler=sampler)
    module = TrainingModule(
        model, guide, loss, lr=config["lr"], num_data=x.shape[0], seed=config["seed"]
    )
    trainer = build_trainer(
        loss,
        devices=devices,
        accelerator=accelerator,
        strategy=strategy,
        max_epochs=-(-steps // every),  # epochs, not max_steps: Lightning resumes those exactly
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[_Checkpoints(folder, config, steps)],
    )
    ckpt = os.path.join(folder, "lightning.ckpt") if resume else None
    trainer.fit(module, loader, ckpt_path=ckpt, weights_only=True)
    return module


def train_command(model, guide, loss, x, config, args):
    r"""The Lightning path of ``pyro-vsm train`` (``--devices`` > 1): :func:`fit_minibatches`
    with the command's arguments.

    :param model: the model.
    :param guide: the guide.
    :param loss: the loss.
    :param torch.Tensor x: the training data.
    :param dict config: the run configuration.
    :param args: the parsed arguments of ``pyro-vsm train``.
    """
    opts = ("devices", "accelerator", "strategy", "checkpoint_every", "resume")
    return fit_minibatches(
        model,
        guide,
        loss,
        x,
        config=config,
        steps=args.steps,
        folder=args.out,
        progress=not args.quiet,
        **{k: getattr(args, k) for k in opts},
    )
