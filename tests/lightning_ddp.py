"""Two-process (DDP, gloo, CPU) checks of ``pyro_vsm.lightning``, run by ``tests/test_lightning.py``
as ``python tests/lightning_ddp.py OUT``: Lightning's DDP re-runs ``sys.argv`` in the second
process, so this is a standalone script, never imported by pytest's collection (the name does not
start with ``test_``). Everything runs in one launch; each process writes ``OUT/rank<r>.pt``.

Each process trains on its own data (process 0's first data column is zero throughout, so its own
gradient vanishes on elements where process 1's does not) with its own seed.
"""

import os
import sys

import torch

torch.set_num_threads(1)

import pyro  # noqa: E402
from pyro.infer import Trace_ELBO  # noqa: E402

from pyro_vsm import AdversarialPriorLoss, LaggingInferenceELBO, LiBILoss  # noqa: E402

STEPS = 3  # optimizer steps of the equivalence check
HALF = 4  # per-process batch of the equivalence check
NUM_DATA = 1000  # the data set size every process scales by


def conformance():
    from tests.infer import test_conformance as tc

    return tc


def rank_data(rank, n, dx, seed=1):
    """Process ``rank``'s data, float64; process 0's first column is zero."""
    g = torch.Generator().manual_seed(seed + 17 * rank)
    x = torch.randn(n, dx, generator=g, dtype=torch.float64)
    if rank == 0:
        x[:, 0] = 0.0
    return x


def trend(x, rank):
    """Scales the batches (of 2 rows) up over the steps on process 0 and down on process 1, so
    that rules reading each process's own values would take different decisions."""
    steps = torch.arange(x.shape[0], dtype=x.dtype) // 2
    scale = 1 + 0.5 * (steps if rank == 0 else steps.max() - steps)
    return x * scale[:, None]


def step_seed(step, rank):
    return 1000 + 100 * step + rank


def cases():
    """Every exported loss of the conformance suite, plus Trace_ELBO and the adversarial prior
    with its default flow (built lazily by ``loss.prepare``)."""
    tc = conformance()
    out = dict(tc.CASES)
    out["Trace_ELBO"] = tc.Case(lambda **kw: Trace_ELBO(**kw), steps=2)
    out["LiBILoss"] = tc.Case(  # scored on each process's batch: the scores are reduced
        lambda **kw: LiBILoss(2, 2, 2, eps_sigma=5.0, eps_mu=5.0, validation_particles=2, **kw),
        steps=8,
        frozen=tc.CASES["LiBILoss"].frozen,
    )
    out["LaggingInferenceELBO"] = tc.Case(  # its window rule reads each step's value
        lambda **kw: LaggingInferenceELBO(inner_window=1, max_inner_steps=4, **kw),
        steps=10,
        frozen=tc.CASES["LaggingInferenceELBO"].frozen,
    )
    out["AdversarialPriorLoss(flow)"] = tc.Case(
        lambda **kw: AdversarialPriorLoss(**kw), energy=True, steps=2
    )
    return out


# ------------------------------------------------------------------------------------------------
# helpers shared with the single-process reference in tests/test_lightning.py
def build(case, seed=0):
    tc = conformance()
    with pyro.settings.context(module_local_params=True):
        return tc._build(case, seed=seed)


def params(model, guide, loss=None):
    out = [p for m in (model, guide) for p in m.parameters()]
    if loss is not None and hasattr(loss, "owned_modules"):
        out += list(loss.owned_modules.parameters())
    return out


# ------------------------------------------------------------------------------------------------
def _trainer(loss, **kw):
    from pyro_vsm.lightning import build_trainer

    kw.setdefault("max_epochs", 1)
    return build_trainer(
        loss,
        devices=2,
        accelerator="cpu",
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        **kw,
    )


def _loader(x, batch):
    data = torch.utils.data.TensorDataset(x)
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)


class _Watch:
    """A callback recording, per step, the phase and whether the tensors the conformance case
    says that phase leaves untouched stayed bit-identical."""

    def __new__(cls, case, model, guide, loss, reseed=False):
        import lightning.pytorch as pl

        class Watch(pl.Callback):
            def __init__(self):
                self.phases, self.untouched = [], []

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if reseed:
                    pyro.set_rng_seed(step_seed(trainer.global_step, trainer.global_rank))
                phase = getattr(loss, "phase", None)
                spec = case.frozen.get(phase)
                self._frozen = spec(model, guide) if spec else []
                self._before = [t.detach().clone() for t in self._frozen]
                self.phases.append(phase)

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                same = [torch.equal(b, t) for b, t in zip(self._before, self._frozen, strict=True)]
                self.untouched.append(all(same))

        return Watch()


def train_every_loss(rank):
    from pyro_vsm.lightning import TrainingModule

    results = {}
    for name, case in cases().items():
        pyro.clear_param_store()
        model, guide = build(case)
        with pyro.settings.context(module_local_params=True):
            loss = conformance()._loss(case)
            module = TrainingModule(model, guide, loss, lr=0.05, num_data=NUM_DATA, seed=5)
            watch = _Watch(case, model, guide, loss)
            x = rank_data(rank, 2 * case.steps, conformance().DX)
            if name == "LaggingInferenceELBO":
                x = trend(x, rank)
            start = [p.detach().clone() for p in params(model, guide)]
            _trainer(loss, callbacks=[watch]).fit(module, _loader(x, 2))
        end = [p.detach().clone() for p in params(model, guide, loss)]
        results[name] = {
            "params": end,
            "moved": any(
                not torch.equal(a, b) for a, b in zip(start, end[: len(start)], strict=True)
            ),
            "phases": watch.phases,
            "untouched": watch.untouched,
            "schedule": loss.state_dict()["schedule"] if hasattr(loss, "schedule") else None,
        }
    return results


def plain_ddp_error(rank):
    from pyro_vsm.lightning import TrainingModule

    case = conformance().CASES["M1Loss(kl)"]
    model, guide = build(case)
    with pyro.settings.context(module_local_params=True):
        loss = conformance()._loss(case)
        module = TrainingModule(model, guide, loss)
        try:
            _trainer(loss, strategy="ddp").fit(module, _loader(rank_data(rank, 4, 3), 2))
        except ValueError as e:
            return str(e)
    return None


def non_finite(rank):
    """Process 0's second batch overflows; both processes must stop there, together."""
    from pyro_vsm.lightning import TrainingModule

    out = {}
    for name in ("M1Loss(kl)", "Trace_ELBO"):
        case = cases()[name]
        model, guide = build(case)
        with pyro.settings.context(module_local_params=True):
            loss = conformance()._loss(case)
            module = TrainingModule(model, guide, loss, num_data=NUM_DATA)
            x = rank_data(rank, 8, 3)
            if rank == 0:
                x[2:4] *= 1e200
            error = None
            try:
                _trainer(loss).fit(module, _loader(x, 2))
            except Exception as e:  # noqa: BLE001 - recorded for the test
                error = (type(e).__name__, str(e))
        out[name] = {"error": error, "params": [p.detach().clone() for p in params(model, guide)]}
    return out


def equivalence_cases():
    tc = conformance()
    out = {name: cases()[name] for name in ("M1Loss(kl)", "Trace_ELBO")}
    # LiBI's first phase has no random draws and penalises the codes of all processes
    out["LiBILoss(likelihood)"] = tc.Case(
        lambda **kw: LiBILoss(STEPS, 1, 1, eps_sigma=5.0, eps_mu=5.0, **kw)
    )
    return out


def equivalence(rank):
    """``STEPS`` steps on per-process batches of ``HALF`` points, seeded per step and process."""
    from pyro_vsm.lightning import TrainingModule

    out = {}
    for name, case in equivalence_cases().items():
        model, guide = build(case)
        with pyro.settings.context(module_local_params=True):
            loss = conformance()._loss(case)
            module = TrainingModule(model, guide, loss, lr=0.02, num_data=NUM_DATA)
            x = rank_data(rank, STEPS * HALF, 3, seed=7)
            watch = _Watch(case, model, guide, loss, reseed=True)
            _trainer(loss, max_steps=STEPS, callbacks=[watch]).fit(module, _loader(x, HALF))
        out[name] = [p.detach().clone() for p in params(model, guide)]
    return out


def resume(rank, folder):
    """LiBI (rounds, scores, best-round snapshot) for 2 epochs, and 1 epoch + 1 resumed."""
    from pyro_vsm.lightning import TrainingModule

    case = cases()["LiBILoss"]
    runs = {}
    for label, splits in (("whole", [2]), ("resumed", [1, 2])):
        path = os.path.join(folder, "libi.ckpt")
        ckpt = None
        for epochs in splits:
            model, guide = build(case)
            with pyro.settings.context(module_local_params=True):
                loss = conformance()._loss(case)
                module = TrainingModule(model, guide, loss, lr=0.05, num_data=NUM_DATA, seed=9)
                x = rank_data(rank, 8, 3)
                trainer = _trainer(loss, max_epochs=epochs)
                trainer.fit(module, _loader(x, 2), ckpt_path=ckpt)
                trainer.save_checkpoint(path)
                ckpt = path
        runs[label] = {
            "params": [p.detach().clone() for p in params(model, guide)],
            "schedule": loss.state_dict()["schedule"],
        }
    return runs


def cli(rank, folder):
    """``pyro-vsm train --devices 2``: 8 steps, and 4 steps + 4 resumed."""
    from pyro_vsm.cli import main

    common = ["train", "--loss", "m1-kl", "--num-data", "64", "--num-test", "16"]
    common += ["--batch-size", "8", "--seed", "3", "--quiet", "--checkpoint-every", "4"]
    common += ["--devices", "2", "--accelerator", "cpu", "--hidden", "8"]
    codes = []
    codes.append(main([*common, "--steps", "8", "--out", os.path.join(folder, "whole")]))
    part = os.path.join(folder, "part")
    codes.append(main([*common, "--steps", "4", "--out", part]))
    codes.append(main([*common, "--steps", "8", "--out", part, "--resume"]))
    return codes


def main(folder):
    pyro.enable_validation(True)
    rank = int(os.environ.get("LOCAL_RANK", "0"))  # set by Lightning in the second process
    out = {"every_loss": train_every_loss(rank)}
    import torch.distributed as dist

    rank = dist.get_rank()
    out["rank"] = rank
    out["plain_ddp"] = plain_ddp_error(rank)
    out["non_finite"] = non_finite(rank)
    out["equivalence"] = equivalence(rank)
    out["resume"] = resume(rank, folder)
    out["cli"] = cli(rank, folder) if not os.environ.get("SKIP_CLI") else None
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1])
