r"""Appendix D of Rosca et al. (2018): learning a linear Gaussian generator with density ratios.

A target and a learnt distribution are both linear-Gaussian generators,

.. math::

    z \sim \mathcal N(0, I_k), \quad x = W^\top z + b
    \quad\Longrightarrow\quad x \sim \mathcal N(b, W^\top W),
    \qquad W \in \mathbb R^{k\times d},\ b \in \mathbb R^d,\ k = 10d,

with :math:`W_{ij} \sim \mathcal N(0, 1/k)` and :math:`b_i \sim \mathcal N(0, 1)` at
initialisation (independent draws for target and learner). A discriminator :math:`D =
\sigma(\ell)` (an MLP with leaky ReLUs) labels target samples real and generated samples fake, so
that :math:`\ell \approx \log p^*(x)/q_\theta(x)`; the generator minimises the paper's reverse-KL
loss :math:`\mathbb E_{q_\theta}[-\log\frac{D}{1 - D}] = \mathbb E_{q_\theta}[-\ell]`, whose value
is the *online* estimate of :math:`\mathrm{KL}[q_\theta\|p^*]`. Both are trained with Adam,
:math:`\beta = (0.5, 0.9)`: the generator with learning rate 1e-3 (the paper's), the discriminator
with 1e-4 or 1e-3, with 1 or 5 discriminator updates per generator update. The true
:math:`\mathrm{KL}[q_\theta\|p^*]` is tracked in closed form. As the paper's reference point, the
same discriminator architecture is also trained on the two *fixed* initial distributions
(:func:`~pyro_vsm.evaluation.density_ratio_kl`) to estimate the initial KL.

The paper's claims (Figures 18-20; 10 seeds, 10^6 iterations, a 4-layer MLP with about 10^8
parameters): with 1:1 updates and discriminator learning rate 1e-4 the true KL falls for
:math:`d = 1, 10` and learning diverges for :math:`d = 100, 1000`; with learning rate 1e-3,
:math:`d = 100` no longer converges; with 5:1 updates :math:`d = 1, 10, 100` converge earlier; the
online estimate is inaccurate at every :math:`d`.

All seeds of one setting train at once as an ensemble (batched matrix products; the summed loss
gives every seed its own gradient and Adam is elementwise, so the runs are independent). Writes
``results.json``, ``results.md`` and ``figure.png`` into ``--out``.

    python examples/density_ratio_linear.py [--dims 1 10 100] [--seeds 3] [--steps 3000]
    python examples/density_ratio_linear.py --smoke      # a few seconds, for the test suite
"""

import argparse
import json
import math
import os
import time

import torch
from torch.nn.functional import leaky_relu, softplus

from pyro_vsm.evaluation import density_ratio_kl

#: (label, discriminator steps per generator step, discriminator learning rate): Figures 18-20
CONFIGS = (("1:1, lr 1e-4", 1, 1e-4), ("1:1, lr 1e-3", 1, 1e-3), ("5:1, lr 1e-4", 5, 1e-4))
BETAS = (0.5, 0.9)


def random_gaussians(seeds, d, k, gen, dtype):
    r"""``(W, b)`` of ``seeds`` random linear generators: ``[seeds, k, d]`` and ``[seeds, d]``."""
    w = torch.randn(seeds, k, d, generator=gen, dtype=dtype) / math.sqrt(k)
    b = torch.randn(seeds, d, generator=gen, dtype=dtype)
    return w, b


def sample(w, b, n, gen):
    r"""``[seeds, n, d]`` draws of :math:`W^\top z + b`, differentiable in ``w`` and ``b``."""
    z = torch.randn(w.shape[0], n, w.shape[1], generator=gen, dtype=w.dtype)
    return torch.baddbmm(b.unsqueeze(1), z, w)


def true_kl(w_q, b_q, w_p, b_p):
    r"""Closed-form :math:`\mathrm{KL}[\mathcal N(b_q, W_q^\top W_q)\|\mathcal N(b_p,
    W_p^\top W_p)]` per seed, in float64."""
    w_q, b_q, w_p, b_p = (t.detach().double() for t in (w_q, b_q, w_p, b_p))
    cov_q = w_q.transpose(-1, -2) @ w_q
    cov_p = w_p.transpose(-1, -2) @ w_p
    eye = torch.eye(cov_q.shape[-1], dtype=torch.float64)
    chol_p = torch.linalg.cholesky(cov_p + 1e-10 * eye)
    chol_q, info = torch.linalg.cholesky_ex(cov_q + 1e-10 * eye)
    d = cov_q.shape[-1]
    trace = torch.cholesky_solve(cov_q, chol_p).diagonal(dim1=-2, dim2=-1).sum(-1)
    diff = (b_p - b_q).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, chol_p)).sum((-1, -2))
    logdet_p = 2 * chol_p.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_q = 2 * chol_q.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    kl = 0.5 * (trace + maha - d + logdet_p - logdet_q)
    return torch.where(info == 0, kl, torch.full_like(kl, math.inf))


class EnsembleMLP:
    r"""``seeds`` independent MLPs ``d -> hidden^layers -> 1`` with leaky ReLUs (slope 0.2),
    evaluated with batched matrix products on inputs ``[seeds, n, d]``."""

    def __init__(self, seeds, d, hidden, layers, gen, dtype):
        dims = [d] + [hidden] * layers + [1]
        self.params = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            bound = 1 / math.sqrt(a)  # torch.nn.Linear's initialisation
            w = (torch.rand(seeds, a, b, generator=gen, dtype=dtype) * 2 - 1) * bound
            c = (torch.rand(seeds, 1, b, generator=gen, dtype=dtype) * 2 - 1) * bound
            self.params += [w.requires_grad_(), c.requires_grad_()]

    def __call__(self, x):
        h = x
        pairs = list(zip(self.params[::2], self.params[1::2], strict=True))
        for i, (w, c) in enumerate(pairs):
            h = torch.baddbmm(c, h, w)
            if i < len(pairs) - 1:
                h = leaky_relu(h, 0.2)
        return h.squeeze(-1)


def train_setting(d, seeds, disc_steps, disc_lr, args, seed):
    r"""One (d, configuration): every seed at once. Returns the per-seed curves."""
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32
    k = 10 * d
    w_p, b_p = random_gaussians(seeds, d, k, gen, dtype)  # the target
    w_q, b_q = random_gaussians(seeds, d, k, gen, dtype)  # the learner's initialisation
    w_q.requires_grad_()
    b_q.requires_grad_()
    disc = EnsembleMLP(seeds, d, args.hidden, args.disc_layers, gen, dtype)
    opt_d = torch.optim.Adam(disc.params, lr=disc_lr, betas=BETAS)
    opt_g = torch.optim.Adam([w_q, b_q], lr=args.gen_lr, betas=BETAS)
    n = args.batch_size
    steps_logged, kl_true, kl_online = [0], [true_kl(w_q, b_q, w_p, b_p)], []
    online = torch.zeros(seeds)
    for step in range(1, args.steps + 1):
        for _ in range(disc_steps):
            with torch.no_grad():
                x_real, x_fake = sample(w_p, b_p, n, gen), sample(w_q, b_q, n, gen)
            loss_d = softplus(-disc(x_real)).mean(1) + softplus(disc(x_fake)).mean(1)
            opt_d.zero_grad(set_to_none=True)
            loss_d.sum().backward()
            opt_d.step()
        neg_logit = -disc(sample(w_q, b_q, n, gen)).mean(1)  # E_q[-l]: the online KL estimate
        opt_g.zero_grad(set_to_none=True)
        neg_logit.sum().backward()
        opt_g.step()
        online += neg_logit.detach()
        if step % args.eval_every == 0:
            steps_logged.append(step)
            kl_true.append(true_kl(w_q, b_q, w_p, b_p))
            kl_online.append(online / args.eval_every)  # mean over the last eval_every steps
            online = torch.zeros(seeds)
    kl_true = torch.stack(kl_true, 1)  # [seeds, T + 1]
    kl_online = torch.stack(kl_online, 1) if kl_online else torch.zeros(seeds, 0)
    return steps_logged, kl_true, kl_online, (w_p.detach(), b_p, w_q.detach(), b_q.detach())


def stationary_estimate(d, seeds, args, seed):
    r"""The same discriminator architecture trained on the fixed initial distributions:
    density_ratio_kl's estimate of KL[q_0 || p*] against the closed form, per seed."""
    gen = torch.Generator().manual_seed(seed)
    k = 10 * d
    w_p, b_p = random_gaussians(seeds, d, k, gen, torch.float32)
    w_q, b_q = random_gaussians(seeds, d, k, gen, torch.float32)
    with torch.no_grad():
        xq = sample(w_q, b_q, args.estimation_samples, gen)
        xp = sample(w_p, b_p, args.estimation_samples, gen)
    out = []
    for s in range(seeds):
        est, diag = density_ratio_kl(
            xq[s],
            xp[s],
            hidden=args.hidden,
            num_layers=args.disc_layers,
            steps=args.estimation_steps,
            batch_size=args.batch_size,
            lr=1e-4,
            betas=BETAS,
            seed=seed + s,
            return_diagnostics=True,
        )
        out.append((est, diag.accuracy))
    return out, true_kl(w_q, b_q, w_p, b_p).tolist()


def first_below(steps, curve, level):
    for s, v in zip(steps, curve, strict=True):
        if v < level:
            return s
    return None


def summarise_setting(label, d, steps, kl_true, kl_online, stationary, seconds):
    init, final = kl_true[:, 0], kl_true[:, -1]
    finite = torch.isfinite(final)
    entry = {
        "config": label,
        "d": d,
        "seeds": int(kl_true.shape[0]),
        "initial_kl": init.mean().item(),
        "final_kl_mean": final[finite].mean().item() if finite.any() else math.nan,
        "final_kl_median": final.median().item(),
        "final_kl_min": final.min().item(),
        "final_kl_max": final.max().item(),
        "min_kl_mean": kl_true.nan_to_num(math.inf).min(1).values.mean().item(),
        "final_over_initial_median": (final / init).median().item(),
        "converged": int((final < 0.1 * init).sum()),
        "diverged": int((~finite | (final > init)).sum()),
        "seconds": seconds,
    }
    halves = [first_below(steps, row.tolist(), 0.5 * row[0].item()) for row in kl_true]
    reached = [h for h in halves if h is not None]
    entry["steps_to_half_median"] = sorted(reached)[len(reached) // 2] if reached else None
    entry["reached_half"] = len(reached)
    if kl_online.shape[1]:
        last_true = kl_true[:, -1]
        last_online = kl_online[:, -1]
        entry["final_online_estimate_mean"] = last_online.mean().item()
        rel = ((last_online - last_true).abs() / last_true.abs().clamp_min(1e-3)).median()
        entry["online_relative_error_median"] = rel.item()
    if stationary is not None:
        (pairs, truth) = stationary
        entry["stationary_estimate_mean"] = sum(e for e, _ in pairs) / len(pairs)
        entry["stationary_accuracy_mean"] = sum(a for _, a in pairs) / len(pairs)
        entry["stationary_true_kl_mean"] = sum(truth) / len(truth)
    return entry


def markdown(summary):
    lines = [
        "| setting | d | KL at init | density-ratio est. at init (stationary) | final KL: median "
        "[min, max] | final/init (median) | steps to KL/2 (median, reached) | converged (<10%) "
        "| diverged (>init) | online est. at end (mean) | online rel. error (median) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        stat = s.get("stationary_estimate_mean")
        stat = "—" if stat is None else f"{stat:.3g} (true {s['stationary_true_kl_mean']:.3g})"
        half = s["steps_to_half_median"]
        lines.append(
            f"| {s['config']} | {s['d']} | {s['initial_kl']:.3g} | {stat} | "
            f"{s['final_kl_median']:.3g} [{s['final_kl_min']:.3g}, {s['final_kl_max']:.3g}] | "
            f"{s['final_over_initial_median']:.3g} | "
            f"{'—' if half is None else half} ({s['reached_half']}/{s['seeds']}) | "
            f"{s['converged']}/{s['seeds']} | {s['diverged']}/{s['seeds']} | "
            f"{s.get('final_online_estimate_mean', math.nan):.3g} | "
            f"{s.get('online_relative_error_median', math.nan):.2f} |"
        )
    return "\n".join(lines)


def figure(curves, summary, dims, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(CONFIGS), len(dims), figsize=(4 * len(dims), 3 * len(CONFIGS)), squeeze=False
    )
    for i, (label, _, _) in enumerate(CONFIGS):
        for j, d in enumerate(dims):
            ax = axes[i][j]
            steps, kl_true, kl_online = curves[(label, d)]
            for s in range(kl_true.shape[0]):
                ax.plot(steps, kl_true[s], color="C0", alpha=0.35, lw=0.8)
                if kl_online.shape[1]:
                    ax.plot(steps[1:], kl_online[s], color="C1", alpha=0.35, lw=0.8, ls="--")
            ax.plot([], [], color="C0", label="true KL")
            ax.plot([], [], color="C1", ls="--", label="online estimate")
            entry = next(e for e in summary if e["config"] == label and e["d"] == d)
            if "stationary_estimate_mean" in entry:
                ax.axhline(
                    entry["stationary_estimate_mean"], color="C2", lw=1, label="est. at init"
                )
            ax.axhline(entry["initial_kl"], color="k", lw=0.8, ls=":", label="KL at init")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_title(f"{label}, d = {d}", fontsize=9)
            ax.set_xlabel("generator step")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args):
    summary, curves = [], {}
    for d in args.dims:
        stationary = stationary_estimate(d, args.seeds, args, seed=1000 * d)
        for label, disc_steps, disc_lr in CONFIGS:
            start = time.perf_counter()
            # the same seed for every configuration: same Gaussians, same initial discriminators
            steps, kl_true, kl_online, _ = train_setting(
                d, args.seeds, disc_steps, disc_lr, args, seed=1000 * d
            )
            seconds = time.perf_counter() - start
            curves[(label, d)] = (steps, kl_true, kl_online)
            entry = summarise_setting(label, d, steps, kl_true, kl_online, stationary, seconds)
            summary.append(entry)
            if not args.quiet:
                print(
                    f"d={d:<4} {label:<13} KL {entry['initial_kl']:9.3g} -> median "
                    f"{entry['final_kl_median']:9.3g}  online {entry.get('final_online_estimate_mean', math.nan):9.3g}"
                    f"  ({seconds:.0f} s)",
                    flush=True,
                )
    return summary, curves


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--seeds", type=int, default=3, help="independent runs per setting (paper: 10)")
    p.add_argument("--steps", type=int, default=3000, help="generator updates (paper: 10^6)")
    p.add_argument("--hidden", type=int, default=128, help="discriminator width (paper: ~5000)")
    p.add_argument("--disc-layers", type=int, default=4, help="discriminator hidden layers")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gen-lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=25, help="steps between true-KL evaluations")
    p.add_argument("--estimation-steps", type=int, default=3000, help="stationary classifier")
    p.add_argument("--estimation-samples", type=int, default=20000)
    p.add_argument("--out", default="results/density_ratio_linear")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: small models)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = p.parse_args(argv)
    if args.smoke:
        args.dims, args.seeds, args.steps, args.eval_every = [1, 10], 2, 6, 3
        args.hidden, args.estimation_steps, args.estimation_samples = 16, 5, 100
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        summary, curves = run(args)
    finally:
        torch.set_num_threads(threads)
    os.makedirs(args.out, exist_ok=True)
    serial = {
        f"{label} | d={d}": {"steps": s, "true_kl": t.tolist(), "online_estimate": o.tolist()}
        for (label, d), (s, t, o) in curves.items()
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "summary": summary, "curves": serial}, f, indent=1)
    table = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    figure(curves, summary, args.dims, os.path.join(args.out, "figure.png"))
    if not args.quiet:
        print(table)
    return summary


if __name__ == "__main__":
    main()
