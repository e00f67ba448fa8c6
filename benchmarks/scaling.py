"""Data-parallel scaling: training samples per second of one process vs two (DDP, Lightning).

MLP Gaussian VAE on 784-d data (20-d latent, hidden 512-512), ``M1Loss("kl")``, Adam, through
``pyro_vsm.lightning.TrainingModule`` in every configuration:

* ``1 process x 1 thread`` -- the baseline;
* ``1 process x 2 threads`` -- the same cores used by intra-op threads instead of processes;
* ``2 processes x 1 thread`` -- DDP (``strategy_for(loss)``: find_unused_parameters=True; gloo on
  CPU, NCCL on GPUs).

*Strong scaling*: the global batch is fixed (``--batch``; each of two processes takes half), so a
step does the same work in every configuration. *Weak scaling*: each process takes ``--batch``
points. Each configuration runs in a fresh process (Lightning's DDP re-runs this script); only the
steps after ``--warmup`` are timed (no start-up, no import). Rounds are interleaved and the median
taken; the speed-up is the ratio of medians within this run. Writes JSON.

    python benchmarks/scaling.py [--rounds 3] [--steps 30] [--out results/scaling.json]

On several GPUs pass ``--accelerator gpu --devices N`` (not run here); several machines need
Lightning's ``num_nodes`` and a launcher on each machine (see ``pyro_vsm.lightning``).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

DIM, LATENT = 784, 20
CONFIGS = {  # name -> (processes, threads per process)
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread": (2, 1),
}


def worker(args):
    """One configuration: ``args.steps`` timed steps; process 0 writes ``args.result``."""
    torch.set_num_threads(args.threads)
    import lightning.pytorch as pl
    import pyro

    from pyro_vsm import M1Loss
    from pyro_vsm.guides import DiagonalNormalEncoder
    from pyro_vsm.lightning import TrainingModule, build_trainer
    from pyro_vsm.models import GaussianVAE

    pyro.set_rng_seed(0)
    per_process = args.batch // args.devices if args.scaling == "strong" else args.batch
    steps = args.warmup + args.steps
    x = torch.rand(
        per_process * args.devices * steps, DIM, generator=torch.Generator().manual_seed(0)
    )
    pyro.settings.set(module_local_params=True)
    model = GaussianVAE.mlp(DIM, LATENT, hidden=tuple(args.hidden))
    guide = DiagonalNormalEncoder.mlp(DIM, LATENT, hidden=tuple(args.hidden))
    loss = M1Loss("kl", max_plate_nesting=1)
    module = TrainingModule(model, guide, loss, lr=1e-4, num_data=x.shape[0], seed=0)
    marks = {}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                marks["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == steps:
                marks["end"] = time.perf_counter()

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x), batch_size=per_process, shuffle=True
    )
    trainer = build_trainer(
        loss,
        devices=args.devices,
        accelerator=args.accelerator,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    trainer.fit(module, loader)
    if trainer.is_global_zero and args.result:
        seconds = marks["end"] - marks["start"]
        with open(args.result, "w") as f:
            json.dump({"seconds": seconds, "samples": per_process * args.devices * args.steps}, f)


def _run(name, args, folder):
    processes, threads = CONFIGS[name]
    result = os.path.join(folder, "result.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--result", result]
    command += ["--devices", str(processes), "--threads", str(threads)]
    command += [
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
    ]
    command += ["--scaling", args.scaling, "--accelerator", args.accelerator, "--hidden"]
    command += [str(h) for h in args.hidden]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    with open(result) as f:
        out = json.load(f)
    return out["samples"] / out["seconds"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--batch", type=int, default=128, help="global (strong) / per-process batch")
    p.add_argument("--scaling", choices=["strong", "weak", "both"], default="both")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="subset to run")
    p.add_argument("--out", default="results/scaling.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    # one configuration (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.smoke:
        args.rounds, args.steps, args.warmup, args.batch, args.hidden = 1, 2, 1, 8, [16]
    modes = ["strong", "weak"] if args.scaling == "both" else [args.scaling]
    rates = {m: {c: [] for c in args.configs} for m in modes}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for mode in modes:
                args.scaling = mode
                for name in args.configs:
                    rates[mode][name].append(_run(name, args, folder))
    base = "1 process x 1 thread"
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "accelerator": args.accelerator,
        "torch": torch.__version__,
        "setting": {
            "model": f"GaussianVAE.mlp({DIM}, {LATENT}, hidden={args.hidden}), M1Loss('kl')",
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds,
        },
        "samples_per_second": {
            m: {c: statistics.median(v) for c, v in r.items()} for m, r in rates.items()
        },
        "all_rounds": rates,
    }
    result["speedup_over_1x1"] = {
        m: {c: v / r[base] for c, v in r.items()}
        for m, r in result["samples_per_second"].items()
        if base in r
    }
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    for mode, r in result["samples_per_second"].items():
        for name, v in r.items():
            ratio = result["speedup_over_1x1"].get(mode, {}).get(name, float("nan"))
            print(f"{mode:6s} {name:<24s} {v:9.1f} samples/s  {ratio:5.2f}x")
    return result


if __name__ == "__main__":
    main()
