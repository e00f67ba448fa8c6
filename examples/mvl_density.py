r"""Density estimation of 2-D data with energy-based models: MVL against SSM, DSM and CD-1.

Wang et al. (2020), Section 6.1: an unnormalized model :math:`q(x) \propto e^{-E(x)}` with a
neural energy (:class:`~pyro_vsm.distributions.MLPEnergy`: two hidden layers of 64 SiLU units and
a small quadratic confinement, so :math:`e^{-E}` is integrable) is fitted to each built-in 2-D
data set through ``pyro.infer.SVI`` with :class:`~pyro_vsm.MVLLoss` and each estimator:

* ``langevin`` -- minimum-velocity learning (one Langevin step with the control variate),
* ``ssm`` -- sliced score matching (the baseline the paper compares with),
* ``dsm`` -- variance-reduced denoising score matching,
* ``cd1`` -- variance-reduced CD-1,

all with :math:`\epsilon = 10^{-3}` (float64), the same data, steps, batch and Adam settings.
The held-out log-likelihood :math:`\frac1n\sum_i -E(x_i) - \log Z` uses :math:`\log Z` by
midpoint quadrature on a grid over the box that holds the data (plus a margin); the time per step
is the median process CPU time of the training steps. Outputs in ``--out``: ``mvl_density.json``,
``mvl_density.md`` (table) and ``mvl_density.png`` (fitted densities).

Run ``python examples/mvl_density.py`` or ``--smoke`` (seconds).
"""

import argparse
import json
import math
import pathlib
import statistics
import time

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_vsm import MVLLoss, reporting
from pyro_vsm.datasets import make_2d
from pyro_vsm.distributions import EnergyDistribution, MLPEnergy

DATASETS = ("banana", "rings", "8gaussians", "checkerboard", "2spirals")
ESTIMATORS = ("langevin", "ssm", "dsm", "cd1")
LABELS = {"langevin": "MVL", "ssm": "SSM", "dsm": "DSM", "cd1": "VR-CD-1"}


def model_of(energy, num_data):
    """The unnormalized model e^{-E(x)} observing a minibatch of a data set of ``num_data``."""

    def model(x):
        pyro.module("energy", energy)
        with pyro.plate("data", num_data, subsample=torch.arange(x.shape[0])):
            pyro.sample("x", EnergyDistribution(energy), obs=x)

    return model


def no_guide(x):
    """The model has no latent sites."""


def log_partition(energy, low, high, num):
    """log Z by midpoint quadrature on ``num × num`` cells of the box [low, high]."""
    axes = [
        low[i] + (high[i] - low[i]) * (torch.arange(num, dtype=torch.float64) + 0.5) / num
        for i in range(2)
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    cell = float((high[0] - low[0]) * (high[1] - low[1])) / num**2
    with torch.no_grad():
        return torch.logsumexp(-energy(grid), 0).item() + math.log(cell), grid


def fit(name, estimator, args):
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    x_train = make_2d(name, args.num_data, seed=args.seed, dtype=torch.float64)
    x_test = make_2d(name, args.num_test, seed=args.seed + 1000, dtype=torch.float64)
    energy = MLPEnergy(2, hidden=(args.hidden, args.hidden)).double()
    loss = MVLLoss(step_size=args.step_size, estimator=estimator)
    svi = SVI(model_of(energy, len(x_train)), no_guide, Adam({"lr": args.lr}), loss=loss)
    gen = torch.Generator().manual_seed(args.seed)
    times = []
    for _ in range(args.steps):
        idx = torch.randint(len(x_train), (args.batch_size,), generator=gen)
        start = time.process_time()
        svi.step(x_train[idx])
        times.append(time.process_time() - start)
    both = torch.cat([x_train, x_test])
    margin = 1.0
    low, high = both.min(0).values - margin, both.max(0).values + margin
    log_z, grid = log_partition(energy, low, high, args.grid)
    with torch.no_grad():
        test_ll = (-energy(x_test)).mean().item() - log_z
    return energy, {
        "dataset": name,
        "estimator": estimator,
        "test_log_likelihood": test_ll,
        "log_z": log_z,
        "ms_per_step": 1e3 * statistics.median(times),
        "box": [low.tolist(), high.tolist()],
    }


def figure(energies, rows, path, num=150):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    fig, axes = plt.subplots(
        len(datasets), len(estimators), figsize=(2.4 * len(estimators), 2.4 * len(datasets))
    )
    axes = [[axes]] if len(datasets) == 1 and len(estimators) == 1 else axes
    if len(datasets) == 1:
        axes = [axes]
    for row in rows:
        i, j = datasets.index(row["dataset"]), estimators.index(row["estimator"])
        (x0, y0), (x1, y1) = row["box"]
        xs, ys = torch.linspace(x0, x1, num, dtype=torch.float64), torch.linspace(y0, y1, num)
        grid = torch.stack(torch.meshgrid(xs, ys.double(), indexing="xy"), -1)
        with torch.no_grad():
            density = (-energies[(row["dataset"], row["estimator"])](grid) - row["log_z"]).exp()
        ax = axes[i][j]
        ax.imshow(density.numpy(), origin="lower", extent=(x0, x1, y0, y1), cmap="viridis")
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title(LABELS[row["estimator"]])
        if j == 0:
            ax.set_ylabel(row["dataset"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-data", type=int, default=20_000)
    p.add_argument("--num-test", type=int, default=5_000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--step-size", type=float, default=1e-3)
    p.add_argument("--grid", type=int, default=400, help="quadrature cells per axis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/mvl_density")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="a tiny run (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        args.datasets, args.steps, args.num_data, args.num_test = ["banana"], 5, 500, 200
        args.grid, args.hidden = 50, 8
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, energies = [], {}
    for name in args.datasets:
        for estimator in args.estimators:
            energy, row = fit(name, estimator, args)
            rows.append(row)
            energies[(name, estimator)] = energy
            if not args.quiet:
                print(
                    f"{name:<12} {LABELS[estimator]:<8} test log-lik "
                    f"{row['test_log_likelihood']:8.3f}  {row['ms_per_step']:.2f} ms/step",
                    flush=True,
                )
    header = ["data set"] + [f"{LABELS[e]} test LL" for e in args.estimators]
    header += [f"{LABELS[e]} ms/step" for e in args.estimators]
    table = []
    for name in args.datasets:
        by = {r["estimator"]: r for r in rows if r["dataset"] == name}
        table.append(
            [name]
            + [reporting.format_mean(by[e]["test_log_likelihood"]) for e in args.estimators]
            + [f"{by[e]['ms_per_step']:.2f}" for e in args.estimators]
        )
    markdown = reporting.markdown_table(header, table)
    (out / "mvl_density.md").write_text(markdown + "\n")
    with open(out / "mvl_density.json", "w") as f:
        json.dump({"config": vars(args), "runs": rows}, f, indent=1)
    figure(energies, rows, out / "mvl_density.png")
    if not args.quiet:
        print(markdown)
    return rows


if __name__ == "__main__":
    main()
