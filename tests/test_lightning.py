"""``pyro_vsm.lightning``: in-process checks on one process, and the two-process (DDP) checks of
``tests/lightning_ddp.py``, run once in a subprocess (Lightning's DDP re-runs ``sys.argv``)."""

import importlib
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pyro
import pytest
import torch

pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy  # noqa: E402
from pyro.infer import Trace_ELBO  # noqa: E402

from pyro_vsm import M1Loss, NonFiniteLossError  # noqa: E402
from pyro_vsm.checkpoint import load_checkpoint  # noqa: E402
from pyro_vsm.experiments import build_vae, make_objective  # noqa: E402
from pyro_vsm.infer import distributed  # noqa: E402
from pyro_vsm.infer.grouped_routing import FrozenElements  # noqa: E402
from pyro_vsm.lightning import (  # noqa: E402
    FIND_UNUSED,
    ReplacementSampler,
    TrainingModule,
    _check_strategy,
    build_trainer,
    fit_minibatches,
    strategy_for,
)
from tests import lightning_ddp as ddp  # noqa: E402
from tests.infer import test_conformance as tc  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


# ---- two processes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """One launch of ``tests/lightning_ddp.py`` on two processes; the results of both."""
    folder = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "lightning_ddp.py"
    done = subprocess.run(
        [sys.executable, str(script), str(folder)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return out, folder


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", sorted(ddp.cases()))
def test_every_loss_keeps_the_processes_identical(ranks, name):
    (r0, r1), _ = ranks
    a, b = r0["every_loss"][name], r1["every_loss"][name]
    assert a["moved"] and len(a["phases"]) == ddp.cases()[name].steps
    assert _equal(a["params"], b["params"]), name
    assert a["phases"] == b["phases"] and a["schedule"] == b["schedule"]
    assert all(a["untouched"]) and all(b["untouched"]), (name, a["phases"], a["untouched"])


def test_data_dependent_decisions_were_taken(ranks):
    (r0, _), _ = ranks
    lagging = r0["every_loss"]["LaggingInferenceELBO"]
    # the window rule ended a run of guide steps before max_inner_steps (4) on the processes'
    # mean (their own values trend in opposite directions), and aggressive mode ended
    assert lagging["phases"].index("model") < 4
    assert lagging["schedule"]["switch_step"] is not None
    libi = r0["every_loss"]["LiBILoss"]["schedule"]
    assert len(libi["round_scores"]) == 1 and math.isfinite(libi["round_scores"][0])


def test_plain_ddp_is_one_line_naming_the_fix(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert r["plain_ddp"] is not None and "\n" not in r["plain_ddp"]
        assert FIND_UNUSED in r["plain_ddp"] and "M1Loss" in r["plain_ddp"]


@pytest.mark.parametrize("name", ["M1Loss(kl)", "Trace_ELBO"])
def test_a_non_finite_loss_on_one_process_stops_both(ranks, name):
    (r0, r1), _ = ranks
    a, b = r0["non_finite"][name], r1["non_finite"][name]
    assert a["error"][0] == b["error"][0] == "NonFiniteLossError"
    assert "at step 1" in a["error"][1] and "another process" in b["error"][1]
    assert _equal(a["params"], b["params"])


def _reference(name, case):
    """One process: each step averages the two half-batch gradients drawn with the processes'
    seeds (LiBI's first phase, which draws nothing: one step on the union of the batches)."""
    model, guide = ddp.build(case)
    params = ddp.params(model, guide)
    opt = torch.optim.Adam(params, lr=0.02)
    xs = [ddp.rank_data(r, ddp.STEPS * ddp.HALF, 3, seed=7) for r in (0, 1)]
    with pyro.settings.context(module_local_params=True):
        modules = [tc._loss(case)(model, guide) for _ in (0, 1)]
        for step in range(ddp.STEPS):
            rows = slice(step * ddp.HALF, (step + 1) * ddp.HALF)
            if name.startswith("LiBI"):
                opt.zero_grad()
                modules[0](torch.cat([x[rows] for x in xs]), num_data=ddp.NUM_DATA).backward()
                opt.step()
                continue
            grads = []
            for r in (0, 1):
                pyro.set_rng_seed(ddp.step_seed(step, r))
                opt.zero_grad()
                modules[r](xs[r][rows], num_data=ddp.NUM_DATA).backward()
                grads.append([p.grad for p in params])
            for p, g0, g1 in zip(params, *grads, strict=True):
                p.grad = None if g0 is None else (g0 + g1) / 2
            opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("name", sorted(ddp.equivalence_cases()))
def test_two_processes_equal_one_averaging_their_gradients(ranks, name):
    (r0, r1), _ = ranks
    expected = _reference(name, ddp.equivalence_cases()[name])
    assert _equal(r0["equivalence"][name], r1["equivalence"][name])
    for e, got in zip(expected, r0["equivalence"][name], strict=True):
        assert torch.allclose(e, got, rtol=1e-12, atol=1e-14), name
    start = ddp.params(*ddp.build(ddp.equivalence_cases()[name]))
    assert not _equal(start, expected)


def test_resume_at_an_epoch_boundary_equals_an_uninterrupted_run(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert _equal(r["resume"]["whole"]["params"], r["resume"]["resumed"]["params"])
        assert r["resume"]["whole"]["schedule"] == r["resume"]["resumed"]["schedule"]


def test_the_command_with_two_devices_checkpoints_and_resumes(ranks):
    (r0, r1), folder = ranks
    assert r0["cli"] == r1["cli"] == [0, 0, 0]
    whole = load_checkpoint(str(folder / "whole" / "checkpoint.pt"))
    resumed = load_checkpoint(str(folder / "part" / "checkpoint.pt"))
    assert whole["step"] == resumed["step"] == 8 and whole["config"]["devices"] == 2
    for key in ("model", "guide"):
        assert all(torch.equal(whole[key][k], resumed[key][k]) for k in whole[key])
    from pyro_vsm.cli import main

    evaluate = ["--eval-samples", "20", "--ais-temperatures", "4", "--ais-points", "8"]
    assert main(["evaluate", str(folder / "whole" / "checkpoint.pt"), *evaluate]) == 0


# ---- one process -----------------------------------------------------------------------------
def test_reductions_are_identities_on_one_process():
    assert distributed.world_size() == 1
    assert distributed.mean_over_processes(torch.tensor(2.5)) == 2.5
    assert distributed.mean_over_processes({"a": 1, "b": torch.tensor(3.0)}) == {"a": 1.0, "b": 3.0}
    assert distributed.max_over_processes(2) == 2.0
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_rows(x) is x


def test_strategy_for_a_loss():
    assert strategy_for(M1Loss()) == FIND_UNUSED
    assert strategy_for(Trace_ELBO()) == "ddp"
    _check_strategy(M1Loss(), DDPStrategy(find_unused_parameters=True))
    _check_strategy(Trace_ELBO(), DDPStrategy())
    with pytest.raises(ValueError, match=FIND_UNUSED):
        _check_strategy(M1Loss(), DDPStrategy())
    trainer = build_trainer(M1Loss(), devices=1, accelerator="cpu", **QUIET)
    assert not isinstance(trainer.strategy, DDPStrategy)


def test_the_module_needs_module_local_params():
    model, guide = build_vae(2, 2, [4])
    with pytest.raises(ValueError, match="module_local_params=True"):
        TrainingModule(model, guide, M1Loss())


def test_import_error_names_the_extra(monkeypatch):
    import pyro_vsm.lightning as module

    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ImportError, match=r"pyro-vsm\[lightning\]"):
        importlib.reload(module)
    monkeypatch.undo()
    importlib.reload(module)


def _module(loss, **kw):
    with pyro.settings.context(module_local_params=True):
        model, guide = build_vae(3, 2, [4], dtype=torch.float64)
        return TrainingModule(model, guide, loss, **kw)


def _fit(module, x, batch=4, **kw):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=batch)
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="64-true", **QUIET, **kw)
    with pyro.settings.context(module_local_params=True):
        trainer.fit(module, loader)
    return trainer


class _Reseed(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        pyro.set_rng_seed(100 + trainer.global_step)


def test_one_process_reproduces_a_plain_torch_loop():
    x = torch.randn(12, 3, dtype=torch.float64)
    module = _module(M1Loss(), lr=0.01, num_data=100)
    start = {k: v.clone() for k, v in module.elbo.state_dict().items()}
    trainer = _fit(module, x, max_epochs=2, callbacks=[_Reseed()])
    assert trainer.global_step == 6 and module.loss.step == 6
    assert {"loss", "guide", "model"} <= set(trainer.logged_metrics)
    with pyro.settings.context(module_local_params=True):
        model, guide = build_vae(3, 2, [4], dtype=torch.float64)
        elbo = M1Loss()(model, guide)
        elbo.load_state_dict(start)
        opt = torch.optim.Adam(elbo.parameters(), lr=0.01)
        for step, rows in enumerate(list(x.split(4)) * 2):
            pyro.set_rng_seed(100 + step)
            opt.zero_grad()
            elbo(rows, num_data=100).backward()
            opt.step()
    assert _equal(list(module.elbo.parameters()), list(elbo.parameters()))


def test_elements_held_fixed_in_a_closure_step():
    """Lightning computes the gradient inside ``optimizer.step(closure)``: LiBI's first phase
    must still hold the scale rows of the guide's shared output layer fixed."""
    case = tc.CASES["LiBILoss"]
    with pyro.settings.context(module_local_params=True):
        model, guide = tc._build(case)
        loss = tc._loss(case)
        elbo = loss(model, guide)
        opt = torch.optim.Adam(elbo.parameters(), lr=0.05)
        x = tc._data()

        def closure():
            opt.zero_grad()
            value = elbo(x)
            value.backward()
            return value

        while loss.round == 0:
            opt.step(closure)
        assert loss.phase == "likelihood"
        rows = [t.detach().clone() for t in tc.scale_rows(model, guide)]
        opt.step(closure)
    assert _equal(rows, tc.scale_rows(model, guide))


def test_elements_held_fixed_follow_the_reduced_gradient(monkeypatch):
    """On several processes the elements held fixed are those whose averaged gradient is zero."""
    import pyro_vsm.infer.grouped_routing as routing

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    frozen = FrozenElements([(p, torch.tensor([True, True, False]))])
    p.grad = torch.tensor([0.0, 1.0, 1.0])  # this process's zero at [1] is not the average's
    monkeypatch.setattr(routing, "world_size", lambda: 2)
    opt.step()
    assert p.detach().tolist() == [1.0, 0.0, 0.0]
    frozen.remove()


def test_a_non_finite_loss_stops_before_the_update():
    x = torch.randn(8, 3, dtype=torch.float64)
    x[4:] *= 1e200
    module = _module(M1Loss(), num_data=100)
    before = [p.detach().clone() for p in module.elbo.parameters()]
    with pytest.raises(NonFiniteLossError, match="step 1"):
        _fit(module, x, max_epochs=1)
    assert not _equal(before, list(module.elbo.parameters()))  # step 0 was taken
    assert module.loss.step == 1


def test_prepare_builds_the_loss_modules_before_the_optimizer():
    pytest.importorskip("zuko")
    from pyro_vsm import AdversarialPriorLoss

    case = tc.Case(lambda **kw: AdversarialPriorLoss(**kw), energy=True)
    with pyro.settings.context(module_local_params=True):
        model, guide = tc._build(case)
        module = TrainingModule(model, guide, tc._loss(case))
    trainer = _fit(module, tc._data(), max_steps=1)
    flow = list(module.loss.owned_modules.parameters())
    assert flow
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in flow} <= optimized


def test_replacement_sampler_is_seeded_by_epoch():
    s = ReplacementSampler(10, 6, seed=1)
    first = list(s)
    assert len(first) == 6 and all(0 <= i < 10 for i in first) and list(s) == first
    s.set_epoch(1)
    assert list(s) != first


def test_fit_minibatches_resumes_exactly(tmp_path):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    config = dict(batch_size=8, lr=0.01, seed=3)

    def run(steps, folder, resume=False):
        pyro.set_rng_seed(0)
        with pyro.settings.context(module_local_params=True):
            model, guide = build_vae(2, 2, [8])
            module = fit_minibatches(
                model, guide, make_objective("m1-kl"), x, config=config, steps=steps,
                devices=1, accelerator="cpu", checkpoint_every=4, folder=str(folder),
                resume=resume,
            )  # fmt: skip
        return list(module.elbo.parameters())

    whole = run(8, tmp_path / "whole")
    run(6, tmp_path / "part")  # stops within an epoch
    assert load_checkpoint(str(tmp_path / "part" / "checkpoint.pt"))["step"] == 6
    run(4, tmp_path / "part2")
    assert _equal(whole, run(8, tmp_path / "part2", resume=True))


def test_readme_scaling_example_runs_on_one_process():
    from tests.test_readme import _block

    fast = 'devices=1, accelerator="cpu", max_steps=2, **QUIET'
    code = _block("## Scaling out").replace('devices=2, accelerator="cpu", max_epochs=5', fast)
    assert fast in code
    namespace = {"QUIET": QUIET}
    with pyro.settings.context(module_local_params=False):
        exec(compile(code, "README-scaling-out", "exec"), namespace)
    assert namespace["trainer"].global_step == 2


def test_scaling_benchmark_smoke(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("scaling", ROOT / "benchmarks" / "scaling.py")
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    one = tmp_path / "one.json"  # one configuration, in this process
    worker = ["--worker", "--result", str(one), "--steps", "2", "--warmup", "1", "--batch", "8"]
    with pyro.settings.context(module_local_params=False):
        scaling.main([*worker, "--hidden", "16"])
    assert json.loads(one.read_text())["samples"] == 16
    monkeypatch.setattr(scaling, "_run", lambda name, args, folder: 10.0 * len(name))
    out = tmp_path / "scaling.json"
    result = scaling.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text())["speedup_over_1x1"] == result["speedup_over_1x1"]
    assert set(result["samples_per_second"]) == {"strong", "weak"}


SMALL = ["--num-data", "32", "--num-test", "8", "--steps", "2", "--quiet"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--devices", "0"], "--devices must be at least 1"),
        (["--device", "cpu", "--accelerator", "gpu"], "conflicts with --accelerator gpu"),
        (["--strategy", "ddp"], "--strategy ddp needs --devices 2 or more"),
        (["--devices", "2", "--strategy", "ddp"], "--strategy ddp cannot train M1Loss"),
        (["--devices", "2", "--batch-size", "7"], "must be a multiple of --devices 2"),
    ],
)
def test_bad_device_options_are_one_clear_line(argv, message, capsys, tmp_path):
    from pyro_vsm.cli import main

    assert main(["train", *SMALL, "--out", str(tmp_path), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_resume_needs_the_same_devices(capsys, tmp_path):
    from pyro_vsm.cli import main

    assert main(["train", *SMALL, "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert main(["train", *SMALL, "--out", str(tmp_path), "--resume", "--devices", "2"]) == 1
    assert "was trained with --devices 1" in capsys.readouterr().err
