"""Low-density optima of Fisher-divergence inference: Figure 2 of Wenliang (2022), Section 3.3.2.

A 2-d latent ``z`` with prior N(0, I) and one fixed observation under one of two likelihoods (eq. 11)::

    p_I (x = 2 | z) = N(2; z1 * z2,       0.5²)   -> posterior with two ridges along z1 z2 ≈ 2,
                                                      modes near ±(1.32, 1.32); the origin is a
                                                      saddle of the posterior, ≈ 6.1 nats below them
    p_II(x = 1 | z) = N(1; z1 * relu(z2), 1.0²)   -> a skewed, unimodal posterior

A factorised Gaussian ``q(z) = N(m, diag s²)`` (a ``pyro.param`` guide, no learnable model parameters)
is fitted from every mean of a regular grid of starting points by three inference objectives of
:mod:`pyro_vsm.infer.inference` (the guide objectives of :class:`pyro_vsm.M1Loss`):

* ``"kl"``: KL[q || p(z|x)] with reparametrised samples ("KLD, repar");
* ``"fisher-reparam"``: the posterior Fisher divergence with reparametrised samples ("FD, repar",
  the unbiased gradient, eq. 31);
* ``"fisher"``: the posterior Fisher divergence with ``z`` sampled and detached, so the guide's
  parameters are reached only through the analytic ``∇_z log q`` ("FD, no repar", the biased
  gradient of eq. 32 / Appendix A.5.1),

each with SGD and with Adam. All starts of one panel are fitted at once: the guide holds one
``(m, s)`` per start inside ``pyro.plate("starts")``, and the objective, a sum over the plate, gives
each start the gradient of its own objective (SGD and Adam act elementwise, so the starts are
independent fits). The objective is built by the library itself (:func:`pyro_vsm.infer.trace_scores`
and :func:`~pyro_vsm.infer.inference.guide_objective_terms`, as ``M1Loss`` does on guide steps); no
score is derived by hand.

Expected finding (the paper's): for ``p_I``, "FD, repar" has a *stable* low-density local optimum at
the origin (there ``q`` is a small Gaussian, ``s ≈ 0.36``, whose shape roughly matches the
posterior's saddle) that attracts the starts in a band around the anti-diagonal ``z1 = -z2``; Adam
enlarges that basin. Neither "KLD, repar" nor "FD, no repar" converges there: for them the origin is
at most a saddle that the sampling noise pushes the mean off, and every start ends at one of the two
modes. For ``p_II``, "FD, repar" with SGD reaches a single optimum visibly different from KL's, and
the paper's Adam optimum far from the bulk of ``p_II`` is *not* reproduced here.

Measured with the defaults (13 × 13 starts, 3000 steps): ``p_I`` "FD, repar" ends at the origin
from 38 starts with SGD and 54 with Adam (log posterior 6.1 nats below the modes, ``s = 0.36``);
KL and "FD, no repar" from none. With ``--init-scale 1`` the counts are 39 (SGD) and 37 (Adam):
the enlarged Adam basin depends on the initial ``s``, which the paper does not give.

Each end point is classified. ``low_density``: its unnormalised log posterior is more than 3 nats
below the maximum (the origin of ``p_I`` is 6.1 nats below). For ``p_I``: ``origin`` (``|m| < 0.5``),
``other`` (low density elsewhere, e.g. still travelling along the anti-diagonal), else the mode on
its side of the anti-diagonal (``mode(+,+)`` / ``mode(-,-)``). For ``p_II``: ``bulk`` (within 1 of
the posterior mean, about one posterior standard deviation) or ``away``. ``centres`` is the mean end
point of each class (for ``p_II`` it shows that FD and KL optima differ). The PNG draws the mean
trajectories over the posterior density (computed on a grid from the unnormalised log posterior),
one panel per (likelihood, objective, optimiser); a JSON summary holds the counts.

Choices the paper does not state (all recorded in the summary's ``config``): a 13 × 13 grid on
``[-3, 3]²`` (on a 7 × 7 grid the only starts in the origin's basin are those on the anti-diagonal,
which symmetry alone keeps on that line); initial ``s = 0.5``; 10 samples per step; 3000 steps;
SGD lr 1e-3 with each start's gradient clipped to norm 100 per parameter (the reparametrised FD
gradient reaches 1e4 at the grid's corners, where a plain SGD step diverges; for p_I "FD, repar"
the clip acts on 0.3% of the per-start gradients, 87% of them in the first 100 steps, the rest on
rare heavy-tailed draws), Adam lr 1e-2 without clipping; ``s`` optimised on the log scale; float64.

Run ``python examples/fisher_inference_optima.py`` (about 80 s on one CPU core) or ``--smoke``.
"""

import argparse
import functools
import json
import pathlib
import time
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from pyro_vsm.infer import (
    check_inference,
    guide_objective_terms,
    inference_latent_mode,
    trace_scores,
)

DTYPE = torch.float64

#: eq. 11: observed value, likelihood standard deviation, whether z2 passes through a relu
LIKELIHOODS = {
    "I": dict(x=2.0, noise=0.5, relu=False, title="p_I(x=2|z) = N(2; z1 z2, 0.5²)"),
    "II": dict(x=1.0, noise=1.0, relu=True, title="p_II(x=1|z) = N(1; z1 relu(z2), 1)"),
}
OBJECTIVES = ("kl", "fisher-reparam", "fisher")
OBJECTIVE_TITLES = {"kl": "KLD, repar", "fisher-reparam": "FD, repar", "fisher": "FD, no repar"}
OPTIMISERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-2}
ORIGIN_RADIUS = 0.5
BULK_RADIUS = 1.0
LOW_DENSITY_NATS = 3.0
LABELS = {"I": ("origin", "mode(+,+)", "mode(-,-)", "other"), "II": ("bulk", "away")}
COLOURS = {
    "origin": "tab:orange",
    "mode(+,+)": "tab:blue",
    "mode(-,-)": "tab:green",
    "other": "tab:purple",
    "bulk": "tab:blue",
    "away": "tab:orange",
}


# ---- the problem -----------------------------------------------------------------------------
def likelihood(name, z):
    """``p(x|z)`` of eq. 11 as a distribution over ``x`` with batch shape ``z.shape[:-1]``."""
    spec = LIKELIHOODS[name]
    z2 = torch.relu(z[..., 1]) if spec["relu"] else z[..., 1]
    return dist.Normal(z[..., 0] * z2, spec["noise"])


def observation(name, num_starts, dtype=DTYPE, device=None):
    """The observed ``x``, one copy per start (each start is its own copy of the problem)."""
    return torch.full((num_starts,), LIKELIHOODS[name]["x"], dtype=dtype, device=device)


def log_joint(name, z):
    """Unnormalised log posterior ``log p(z) + log p(x|z)`` at ``z`` (shape ``[..., 2]``)."""
    x = torch.tensor(LIKELIHOODS[name]["x"], dtype=z.dtype, device=z.device)
    prior = dist.Normal(torch.zeros((), dtype=z.dtype, device=z.device), 1.0).log_prob(z).sum(-1)
    return prior + likelihood(name, z).log_prob(x)


def make_model(name):
    """Pyro model: ``z ~ N(0, I)``, ``x ~ p(x|z)`` observed, one independent copy per start."""

    def model(x):
        with pyro.plate("starts", x.shape[-1]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", likelihood(name, z), obs=x)

    return model


def make_guide(prefix, init_loc, init_scale):
    """Factorised Gaussian guide with params ``{prefix}.loc``/``{prefix}.scale`` of shape
    ``[num_starts, 2]`` (``scale`` is optimised on the log scale, Pyro's positive constraint)."""

    def guide(x):
        loc = pyro.param(f"{prefix}.loc", lambda: init_loc.clone())
        scale = pyro.param(
            f"{prefix}.scale",
            lambda: torch.full_like(init_loc, init_scale),
            constraint=dist.constraints.positive,
        )
        with pyro.plate("starts", x.shape[-1]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return guide


def _in_particle_plate(fn, num_particles):
    # the particle plate sits left of the model's one plate, as Pyro's vectorize_particles puts it
    def wrapped(*args, **kwargs):
        with pyro.plate("particles", num_particles, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


def inference_objective(model, guide, inference, *args, num_particles=10):
    """The library's guide objective (what ``M1Loss`` minimises on guide steps), averaged over
    ``num_particles`` vectorized samples and summed over the model's plate; differentiable in
    the guide's parameters. ``"fisher"`` detaches ``z``; ``"kl"``/``"fisher-reparam"`` do not."""
    check_inference(inference)
    mode = inference_latent_mode(inference)
    st = trace_scores(
        _in_particle_plate(model, num_particles),
        _in_particle_plate(guide, num_particles),
        args,
        {},
        latent_mode=mode,
        need_z_scores=inference != "kl",
        require_reparam=mode == "reparam",
        num_vectorized=num_particles,
        max_plate_nesting=2,
        loss_name="fisher_inference_optima",
    )
    return sum(guide_objective_terms(st, inference).values()) / num_particles


def grid_starts(n, radius, dtype=DTYPE):
    """``n × n`` regular grid of initial means on ``[-radius, radius]²``, shape ``[n², 2]``
    (row-major: the first coordinate is the slow one)."""
    g = torch.linspace(-radius, radius, n, dtype=dtype)
    return torch.cartesian_prod(g, g)


# ---- fitting ---------------------------------------------------------------------------------
@dataclass
class Fit:
    """One panel: mean trajectories ``[T, B, 2]`` at ``steps`` (``[T]``), final scales ``[B, 2]``
    and the objective (summed over starts) at each recorded step but step 0."""

    likelihood: str
    inference: str
    optimiser: str
    lr: float
    steps: torch.Tensor
    trajectory: torch.Tensor
    final_scale: torch.Tensor
    objective: torch.Tensor
    seconds: float

    @property
    def final(self):
        return self.trajectory[-1]


def _clip_per_start_(grad, max_norm):
    norm = grad.norm(dim=-1, keepdim=True)
    grad.mul_((max_norm / norm.clamp_min(1e-30)).clamp(max=1.0))


def fit(
    name,
    inference,
    optimiser,
    init_loc,
    *,
    steps,
    lr=None,
    init_scale=0.5,
    num_particles=10,
    clip=100.0,
    record_every=1,
    seed=0,
):
    """Fits one guide per row of ``init_loc`` (``[B, 2]``) to the posterior of likelihood ``name``.

    ``optimiser`` is ``"sgd"`` (each start's gradient clipped to norm ``clip`` per parameter, unless
    ``clip`` is None) or ``"adam"`` (no clipping); both step the unconstrained parameters (``m`` and
    ``log s``). Raises ``FloatingPointError`` on a non-finite objective. Returns a :class:`Fit`.
    """
    if optimiser not in OPTIMISERS:
        raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {optimiser!r}")
    check_inference(inference)
    lr = DEFAULT_LR[optimiser] if lr is None else float(lr)
    init_loc = torch.as_tensor(init_loc, dtype=DTYPE)
    num_starts = init_loc.shape[0]
    prefix = f"fisher_inference_optima/{name}/{inference}/{optimiser}"
    store = pyro.get_param_store()
    for suffix in ("loc", "scale"):
        if f"{prefix}.{suffix}" in store:
            del store[f"{prefix}.{suffix}"]
    pyro.set_rng_seed(seed)
    model, guide = make_model(name), make_guide(prefix, init_loc, init_scale)
    x = observation(name, num_starts, device=init_loc.device)
    guide(x)  # creates the params
    loc, log_scale = (pyro.param(f"{prefix}.{s}").unconstrained() for s in ("loc", "scale"))
    opt_cls = torch.optim.SGD if optimiser == "sgd" else torch.optim.Adam
    opt = opt_cls([loc, log_scale], lr=lr)

    recorded, traj, values = [0], [loc.detach().clone()], []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        value = inference_objective(model, guide, inference, x, num_particles=num_particles)
        if not torch.isfinite(value):
            raise FloatingPointError(
                f"{name}/{inference}/{optimiser}: non-finite objective at step {step}; "
                "lower the learning rate"
            )
        value.backward()
        if optimiser == "sgd" and clip is not None:
            _clip_per_start_(loc.grad, clip)
            _clip_per_start_(log_scale.grad, clip)
        opt.step()
        if step % record_every == 0 or step == steps:
            recorded.append(step)
            traj.append(loc.detach().clone())
            values.append(value.item())
    seconds = time.perf_counter() - start
    return Fit(
        name,
        inference,
        optimiser,
        lr,
        torch.tensor(recorded),
        torch.stack(traj),
        log_scale.detach().exp(),
        torch.tensor(values, dtype=DTYPE),
        seconds,
    )


# ---- analysis --------------------------------------------------------------------------------
def posterior_grid(name, radius=4.0, n=401):
    """``(g, Z, log_density)``: the log posterior density normalised on an ``n × n`` grid over
    ``[-radius, radius]²`` (``log_density[i, j]`` at ``z = (g[i], g[j])``)."""
    g = torch.linspace(-radius, radius, n, dtype=DTYPE)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
    lp = log_joint(name, z)
    cell = (g[1] - g[0]) ** 2
    return g, z, lp - torch.logsumexp(lp.flatten(), 0) - cell.log()


@functools.cache
def posterior_summary(name):
    """Grid moments of the posterior: mean, and the maximum of the unnormalised log posterior."""
    _, z, lp = posterior_grid(name, radius=6.0, n=601)
    w = torch.softmax(lp.flatten(), 0)
    mean = (w[:, None] * z.reshape(-1, 2)).sum(0)
    return {"mean": mean, "max_log_joint": log_joint(name, z).max()}


def classify(name, means):
    """A label per end point (see the module docstring) and the log-density gap (nats) to the
    posterior's maximum."""
    post = posterior_summary(name)
    gap = log_joint(name, means) - post["max_log_joint"]
    if name == "I":
        labels = [
            "origin"
            if m.norm() < ORIGIN_RADIUS
            else "other"
            if d < -LOW_DENSITY_NATS
            else ("mode(+,+)" if m.sum() > 0 else "mode(-,-)")
            for m, d in zip(means, gap, strict=True)
        ]
    else:
        dist_to_mean = (means - post["mean"]).norm(dim=-1)
        labels = ["bulk" if d < BULK_RADIUS else "away" for d in dist_to_mean]
    return labels, gap


def panel_summary(f):
    labels, gap = classify(f.likelihood, f.final)
    counts = {lab: labels.count(lab) for lab in LABELS[f.likelihood]}
    centres = {
        lab: [
            round(v, 3)
            for v in f.final[[i for i, b in enumerate(labels) if b == lab]].mean(0).tolist()
        ]
        for lab in counts
        if counts[lab]
    }
    tail = int((f.steps < 0.9 * f.steps[-1]).sum()) - 1  # last record before 90% of the steps
    moved = (f.trajectory[-1] - f.trajectory[max(tail, 0)]).norm(dim=-1)
    origin = [i for i, lab in enumerate(labels) if lab == "origin"]
    return {
        "likelihood": f.likelihood,
        "inference": f.inference,
        "optimiser": f.optimiser,
        "lr": f.lr,
        "num_starts": len(labels),
        "counts": counts,
        "centres": centres,
        "low_density": int((gap < -LOW_DENSITY_NATS).sum()),
        "min_log_density_gap": round(gap.min().item(), 3),
        "mean_scale_at_origin": (round(f.final_scale[origin].mean().item(), 3) if origin else None),
        "max_move_last_10pct": round(moved.max().item(), 3),
        "seconds": round(f.seconds, 2),
    }


# ---- plotting --------------------------------------------------------------------------------
def plot(fits, path, radius):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(lik, opt) for lik in LIKELIHOODS for opt in OPTIMISERS]
    fig, axes = plt.subplots(
        len(rows), len(OBJECTIVES), figsize=(4 * len(OBJECTIVES), 4 * len(rows)), squeeze=False
    )
    lim = radius + 0.75
    grids = {lik: posterior_grid(lik, radius=lim) for lik in LIKELIHOODS}
    by_key = {(f.likelihood, f.inference, f.optimiser): f for f in fits}
    for r, (lik, opt) in enumerate(rows):
        g, _, logd = grids[lik]
        for c, inference in enumerate(OBJECTIVES):
            ax = axes[r][c]
            ax.contourf(g, g, logd.exp().T, levels=12, cmap="Reds", alpha=0.8)
            f = by_key.get((lik, inference, opt))
            if f is not None:
                labels, _ = classify(lik, f.final)
                for b, lab in enumerate(labels):
                    t = f.trajectory[:, b]
                    ax.plot(t[:, 0], t[:, 1], color=COLOURS[lab], lw=0.8, alpha=0.9)
                    ax.plot(t[0, 0], t[0, 1], "o", color=COLOURS[lab], ms=3)
                ax.plot(f.final[:, 0], f.final[:, 1], "kx", ms=5)
                counts = panel_summary(f)["counts"]
                ax.set_title(
                    f"{lik}: {OBJECTIVE_TITLES[inference]}, {opt}\n"
                    + ", ".join(f"{k} {v}" for k, v in counts.items()),
                    fontsize=9,
                )
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
    fig.suptitle(
        "Mean trajectories of a factorised Gaussian q fitted from a grid of initial means "
        "(Wenliang 2022, Fig. 2)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- command line ----------------------------------------------------------------------------
def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="optimisation steps per panel")
    p.add_argument("--lr", type=float, default=DEFAULT_LR["sgd"], help="SGD learning rate")
    p.add_argument("--adam-lr", type=float, default=DEFAULT_LR["adam"], help="Adam learning rate")
    p.add_argument("--grid", type=int, default=13, help="initial means: GRID x GRID points")
    p.add_argument("--radius", type=float, default=3.0, help="grid on [-RADIUS, RADIUS]^2")
    p.add_argument("--init-scale", type=float, default=0.5, help="initial standard deviation s")
    p.add_argument("--particles", type=int, default=10, help="samples from q per step")
    p.add_argument(
        "--clip", type=float, default=100.0, help="SGD: per-start gradient-norm clip (<= 0: off)"
    )
    p.add_argument("--likelihoods", nargs="+", choices=list(LIKELIHOODS), default=list(LIKELIHOODS))
    p.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("results/fisher_inference_optima")
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (small tensors: 1)")
    p.add_argument("--smoke", action="store_true", help="tiny run: 30 steps on a 3 x 3 grid")
    return p


def main(argv=None):
    """Runs the study, writes ``figure2.png`` and ``summary.json`` to ``--out`` and returns the
    summary dict."""
    args = _parser().parse_args(argv)
    if args.smoke:
        args.steps, args.grid, args.particles = 30, 3, 4
    clip = args.clip if args.clip > 0 else None
    lrs = {"sgd": args.lr, "adam": args.adam_lr}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        starts = grid_starts(args.grid, args.radius)
        record_every = max(1, args.steps // 300)
        fits = []
        for lik in args.likelihoods:
            for inference in OBJECTIVES:
                for opt in OPTIMISERS:
                    fits.append(
                        fit(
                            lik,
                            inference,
                            opt,
                            starts,
                            steps=args.steps,
                            lr=lrs[opt],
                            init_scale=args.init_scale,
                            num_particles=args.particles,
                            clip=clip,
                            record_every=record_every,
                            seed=args.seed,
                        )
                    )
        args.out.mkdir(parents=True, exist_ok=True)
        png, js = args.out / "figure2.png", args.out / "summary.json"
        plot(fits, png, args.radius)
    finally:
        torch.set_num_threads(threads)

    summary = {
        "config": {
            "steps": args.steps,
            "lr": lrs,
            "grid": args.grid,
            "radius": args.radius,
            "init_scale": args.init_scale,
            "particles": args.particles,
            "sgd_clip_per_start": clip,
            "seed": args.seed,
            "origin_radius": ORIGIN_RADIUS,
            "bulk_radius": BULK_RADIUS,
            "low_density_nats": LOW_DENSITY_NATS,
            "posterior_mean": {
                lik: [round(v, 4) for v in posterior_summary(lik)["mean"].tolist()]
                for lik in args.likelihoods
            },
        },
        "panels": {f"{f.likelihood}/{f.inference}/{f.optimiser}": panel_summary(f) for f in fits},
        "files": {"png": str(png), "json": str(js)},
    }
    js.write_text(json.dumps(summary, indent=2))
    _print_table(summary)
    return summary


def _print_table(summary):
    header = f"{'lik':<4}{'objective':<16}{'optim':<6}{'end points':<50}{'low-dens':>9}{'move':>8}"
    print(header)
    print("-" * len(header))
    for p in summary["panels"].values():
        counts = ", ".join(f"{k} {v}" for k, v in p["counts"].items())
        print(
            f"{p['likelihood']:<4}{OBJECTIVE_TITLES[p['inference']]:<16}{p['optimiser']:<6}"
            f"{counts:<50}{p['low_density']:>9}{p['max_move_last_10pct']:>8.3f}"
        )
    print(f"wrote {summary['files']['png']} and {summary['files']['json']}")


if __name__ == "__main__":
    main()
