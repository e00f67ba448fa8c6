"""Overhead of the library's losses over the same algorithm hand-written in plain torch.

The model and guide are written by hand in ordinary Pyro style (``pyro.module``, ``pyro.plate``,
``Normal(...).to_event(1)``), as a user would; the reference is the same algorithm on the same
networks in plain torch, with one multi-tensor Adam (``foreach=True``, torch's fastest on the CPU)
per group (one over all tensors for the joint updates). One *cycle* is one guide update and one
model update (two ``svi.step`` calls for the alternating losses, one for the joint loss), through
``SVI`` with ``pyro.optim.Adam`` (one torch optimizer per tensor), through ``SVI`` with
:func:`pyro_vsm.optim.ForeachAdam` (one optimizer for all tensors) and through
``differentiable_loss`` with one ``torch.optim.Adam`` (the ``loss(model, guide)`` path). For
``Trace_ELBO`` and ``M1Loss(kl)`` it also times the *Pyro floor* (:class:`PyroFloor`): the same
algorithm running the same Pyro model and guide with nothing but one ``poutine.trace`` of each per
update, the cost of executing the programs at all, which no loss that runs them can go below.
Cycles are timed (process CPU time, robust to other processes competing for the cores)
interleaved over several rounds on one torch thread; the ratio is the median over rounds of the
library's cycle time over the reference's in the same round. Writes JSON.

Settings: ``large`` -- 784-d data, 400 hidden units, 20-d latent, batch 128; ``small`` -- the main
job's VAE, 2-d data, two hidden layers of 30, 2-d latent, batch 200.

    python benchmarks/overhead.py [--settings large small] [--rounds 5] [--out ...] [--smoke]
"""

import argparse
import json
import os
import platform
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_vsm import JointFisherLoss, M1Loss, M2Loss
from pyro_vsm.optim import ForeachAdam

SETTINGS = {
    "large": dict(dx=784, hidden=(400,), dz=20, batch=128),
    "small": dict(dx=2, hidden=(30, 30), dz=2, batch=200),
}
LR = 1e-4


def _mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class VAE:
    """A Gaussian VAE written as in Pyro's VAE tutorial."""

    def __init__(self, dx, hidden, dz):
        self.dz = dz
        self.decoder = _mlp([dz, *hidden, dx])
        self.encoder = _mlp([dx, *hidden, 2 * dz])
        self.log_gamma = torch.tensor(0.0)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        log_gamma = pyro.param("log_gamma", self.log_gamma.clone())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.dz), 1.0).to_event(1))
            scale = (0.5 * log_gamma).exp()
            pyro.sample("x", dist.Normal(self.decoder(z), scale).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))


# ------------------------------------------------------------------------------------------------
# hand-written references
# ------------------------------------------------------------------------------------------------
class Reference:
    """The same algorithms in plain torch on the same networks."""

    def __init__(self, vae):
        self.vae = vae
        self.log_gamma = nn.Parameter(vae.log_gamma.clone())
        self.enc_opt = torch.optim.Adam(vae.encoder.parameters(), lr=LR, foreach=True)
        decoder = [*vae.decoder.parameters(), self.log_gamma]
        self.dec_opt = torch.optim.Adam(decoder, lr=LR, foreach=True)
        # joint updates step every tensor with one optimizer (one call, as ForeachAdam does)
        self.all_opt = torch.optim.Adam([*vae.encoder.parameters(), *decoder], lr=LR, foreach=True)

    def _q(self, x):
        loc, raw = self.vae.encoder(x).chunk(2, -1)
        return loc, nn.functional.softplus(raw) + 1e-4

    def _log_lik(self, x, z):
        gamma = self.log_gamma.exp()
        return dist.Normal(self.vae.decoder(z), gamma.sqrt()).to_event(1).log_prob(x)

    def guide_step_kl(self, x):
        """A guide update on the Monte Carlo negative ELBO at one reparametrised z."""
        loc, scale = self._q(x)
        z = loc + scale * torch.randn_like(loc)
        log_q = dist.Normal(loc, scale).to_event(1).log_prob(z)
        log_p = dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z)
        loss = (log_q - log_p - self._log_lik(x, z)).sum()
        self.enc_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.vae.encoder.parameters()))
        self.enc_opt.step()

    def elbo_step(self, x):
        """One joint update of encoder, decoder and γ on the Monte Carlo negative ELBO (what
        ``Trace_ELBO`` estimates): the floor that Pyro itself sets."""
        loc, scale = self._q(x)
        z = loc + scale * torch.randn_like(loc)
        log_q = dist.Normal(loc, scale).to_event(1).log_prob(z)
        log_p = dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z)
        loss = (log_q - log_p - self._log_lik(x, z)).sum()
        self.all_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.all_opt.step()

    def guide_step_fisher(self, x):
        """A guide update on the posterior Fisher divergence at a detached z."""
        loc, scale = self._q(x)
        z = (loc + scale * torch.randn_like(loc)).detach().requires_grad_(True)
        score_q = -(z - loc) / scale**2
        log_joint = (dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z)).sum()
        log_joint = log_joint + self._log_lik(x, z).sum()
        (score_p,) = torch.autograd.grad(log_joint, z, create_graph=True)
        loss = 0.5 * (score_q - score_p).pow(2).sum()
        self.enc_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.vae.encoder.parameters()))
        self.enc_opt.step()

    def _detached_z(self, x, particles=1):
        with torch.no_grad():
            loc, scale = self._q(x)
            return loc + scale * torch.randn((particles,) + loc.shape, dtype=loc.dtype)

    def model_step_m1(self, x):
        """A model update on M~1 = ½‖x − g(z)‖²/γ² − d/γ at z ~ q detached."""
        z = self._detached_z(x)[0]
        gamma = self.log_gamma.exp()
        resid = (x - self.vae.decoder(z)).pow(2).sum(-1)
        loss = (0.5 * resid / gamma**2 - x.shape[-1] / gamma).sum()
        self.dec_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dec_opt.step()

    def model_step_m2(self, x, particles=2):
        """A model update on M2 (eq. 13) with the U-statistic squared mean, S particles."""
        z = self._detached_z(x, particles)
        gamma = self.log_gamma.exp()
        s = (self.vae.decoder(z) - x) / gamma  # score of p(x|z), [S, N, d]
        per = (s.pow(2).sum(-1) - x.shape[-1] / gamma).mean(0)
        sum_s = s.sum(0)
        u = (sum_s.pow(2).sum(-1) - s.pow(2).sum((0, -1))) / (particles * (particles - 1))
        loss = (per - 0.5 * u).sum()
        self.dec_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dec_opt.step()

    def joint_fisher_step(self, x):
        """One joint update on the joint Fisher divergence with reparametrised z."""
        loc, scale = self._q(x)
        z = loc + scale * torch.randn_like(loc)
        score_q = -(z - loc) / scale**2
        gamma = self.log_gamma.exp()
        mean = self.vae.decoder(z)
        log_joint = dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z).sum()
        log_joint = log_joint + dist.Normal(mean, gamma.sqrt()).to_event(1).log_prob(x).sum()
        (score_p,) = torch.autograd.grad(log_joint, z, create_graph=True)
        # M1 with the guide's x-score at fixed z: q(z|x) depends on x through the encoder
        x_leaf = x.detach().requires_grad_(True)
        loc_x, scale_x = self._q(x_leaf)
        log_q_fixed = dist.Normal(loc_x, scale_x).to_event(1).log_prob(z.detach()).sum()
        (score_qx,) = torch.autograd.grad(log_q_fixed, x_leaf, create_graph=True)
        s = (mean - x) / gamma
        m1 = 0.5 * s.pow(2).sum() - x.numel() / gamma + 0.5 * score_qx.pow(2).sum()
        loss = 0.5 * (score_q - score_p).pow(2).sum() + m1
        self.all_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.all_opt.step()


class PyroFloor:
    """The same algorithms run through the user's Pyro model and guide with the least Pyro
    machinery any implementation that executes them needs: per update one
    ``poutine.trace`` of the guide and one ``poutine.trace(poutine.replay(model))``, the objective
    written by hand from the traces, and torch's multi-tensor Adam (no ``SVI``, no checks). Its
    cost over :class:`Reference` is the price of executing the two Pyro programs (``pyro.module``,
    plates, distributions with Pyro's validation, the effect handlers); a loss that runs the
    user's programs cannot go below it. Implemented for ``Trace_ELBO`` and ``M1Loss(kl)``."""

    def __init__(self, vae):
        self.vae = vae
        self.enc_opt = self.dec_opt = self.all_opt = self.log_gamma = None

    def _traces(self, x, guide_grad=True):
        if self.enc_opt is None:  # the first call creates log_gamma in the param store
            with poutine.trace() as tr:
                self.vae.model(x)
            self.log_gamma = tr.trace.nodes["log_gamma"]["value"].unconstrained()
            self.enc_opt = torch.optim.Adam(self.vae.encoder.parameters(), lr=LR, foreach=True)
            decoder = [*self.vae.decoder.parameters(), self.log_gamma]
            self.dec_opt = torch.optim.Adam(decoder, lr=LR, foreach=True)
            encoder = list(self.vae.encoder.parameters())
            self.all_opt = torch.optim.Adam([*encoder, *decoder], lr=LR, foreach=True)
        with torch.set_grad_enabled(guide_grad):
            guide_trace = poutine.trace(self.vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(self.vae.model, trace=guide_trace)).get_trace(x)
        return model_trace, guide_trace

    @staticmethod
    def _log_density(trace):
        return sum(
            site["fn"].log_prob(site["value"]).sum()
            for site in trace.nodes.values()
            if site["type"] == "sample" and not site_is_subsample(site)
        )

    def negative_elbo(self, x):
        """The Monte Carlo negative ELBO at one reparametrised z, from the traces."""
        model_trace, guide_trace = self._traces(x)
        return self._log_density(guide_trace) - self._log_density(model_trace)

    def elbo_step(self, x):
        loss = self.negative_elbo(x)
        self.all_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.all_opt.step()

    def guide_step_kl(self, x):
        loss = self.negative_elbo(x)
        self.enc_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.vae.encoder.parameters()))
        self.enc_opt.step()

    def m1_model_objective(self, x):
        """M~1 at z ~ q detached, from the model's trace."""
        model_trace, _ = self._traces(x, guide_grad=False)
        mean = model_trace.nodes["x"]["fn"].base_dist.loc
        gamma = self.log_gamma.exp()
        resid = (x - mean).pow(2).sum(-1)
        return (0.5 * resid / gamma**2 - x.shape[-1] / gamma).sum()

    def model_step_m1(self, x):
        loss = self.m1_model_objective(x)
        self.dec_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dec_opt.step()


CASES = {
    # Pyro's own floor: a plain Trace_ELBO step (all parameters) against its hand-written twin
    "Trace_ELBO": (lambda: Trace_ELBO(max_plate_nesting=1), 1, ("elbo_step",)),
    "M1Loss(kl)": (
        lambda: M1Loss("kl", guide_steps=1, max_plate_nesting=1),
        2,
        ("guide_step_kl", "model_step_m1"),
    ),
    "M1Loss(fisher)": (
        lambda: M1Loss("fisher", guide_steps=1, max_plate_nesting=1),
        2,
        ("guide_step_fisher", "model_step_m1"),
    ),
    "M2Loss(kl, S=2)": (
        lambda: M2Loss("kl", num_particles=2, vectorize_particles=True, max_plate_nesting=1),
        2,
        ("guide_step_kl", "model_step_m2"),
    ),
    "JointFisherLoss": (lambda: JointFisherLoss(max_plate_nesting=1), 1, ("joint_fisher_step",)),
}


def _time(fn, cycles):
    for _ in range(3):  # warm-up: parameter creation, optimizer state, allocator
        fn()
    start = time.process_time()
    for _ in range(cycles):
        fn()
    return (time.process_time() - start) / cycles


def time_library(name, setting, x, cycles, optim=Adam):
    make, steps, _ = CASES[name]
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(setting["dx"], setting["hidden"], setting["dz"])
    svi = SVI(vae.model, vae.guide, optim({"lr": LR}), loss=make())

    def cycle():
        for _ in range(steps):
            svi.step(x)

    return _time(cycle, cycles)


def time_torch_optimizer(name, setting, x, cycles):
    """The library's loss through ``differentiable_loss`` with one plain ``torch.optim.Adam`` (the
    ``loss(model, guide)`` path): no per-parameter Pyro optimizers, no SVI parameter capture."""
    make, steps, _ = CASES[name]
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(setting["dx"], setting["hidden"], setting["dz"])
    loss = make()
    loss.differentiable_loss(vae.model, vae.guide, x)  # creates the params
    params = [p.unconstrained() for _, p in pyro.get_param_store().items()]
    opt = torch.optim.Adam(params, lr=LR, foreach=True)

    def cycle():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss.differentiable_loss(vae.model, vae.guide, x).backward()
            opt.step()

    return _time(cycle, cycles)


def time_twin(twin, name, setting, x, cycles):
    """Cycles of a hand-written twin of the case (``Reference`` or ``PyroFloor``)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    instance = twin(VAE(setting["dx"], setting["hidden"], setting["dz"]))
    methods = [getattr(instance, m) for m in CASES[name][2]]

    def cycle():
        for m in methods:
            m(x)

    return _time(cycle, cycles)


def has_floor(name):
    return all(hasattr(PyroFloor, m) for m in CASES[name][2])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--losses", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--cycles", type=int, default=10, help="timed cycles per case per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--out", default="results/overhead.json")
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    p.add_argument(
        "--no-validation",
        action="store_true",
        help="pyro.enable_validation(False) (Pyro validates by default; so does the reference)",
    )
    args = p.parse_args(argv)
    pyro.enable_validation(not args.no_validation)
    if args.smoke:
        args.cycles, args.rounds = 2, 1
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, 1 thread",
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "rounds": args.rounds,
        "cycles": args.cycles,
        "validation": not args.no_validation,
        "load_average": list(os.getloadavg()),
        "settings": {},
    }
    for setting_name in args.settings:
        setting = SETTINGS[setting_name]
        x = torch.randn(setting["batch"], setting["dx"], generator=generator)
        timers = {
            "svi": time_library,
            "svi_foreach": lambda *a: time_library(*a, optim=ForeachAdam),
            "torch_optimizer": time_torch_optimizer,
            "reference": lambda *a: time_twin(Reference, *a),
        }
        times = {n: {k: [] for k in timers} for n in args.losses}
        for name in args.losses:
            if has_floor(name):
                times[name]["pyro_floor"] = []
        for _ in range(args.rounds):
            for name in args.losses:
                for key, timer in timers.items():
                    times[name][key].append(timer(name, setting, x, args.cycles))
                if has_floor(name):
                    times[name]["pyro_floor"].append(
                        time_twin(PyroFloor, name, setting, x, args.cycles)
                    )
        rows = {}
        for name, t in times.items():
            med = {k: statistics.median(v) for k, v in t.items()}
            rows[name] = {f"{k}_ms": 1e3 * v for k, v in med.items()}
            # median over rounds of the ratio within a round (both timed under the same load)
            for key, label in (
                ("svi", "ratio"),
                ("svi_foreach", "ratio_svi_foreach"),
                ("torch_optimizer", "ratio_torch_optimizer"),
                ("pyro_floor", "ratio_pyro_floor"),
            ):
                if key in t:
                    rows[name][label] = statistics.median(
                        a / b for a, b in zip(t[key], t["reference"], strict=True)
                    )
            if "pyro_floor" in t:  # the library's own share: its cycle over the floor's
                rows[name]["svi_foreach_over_pyro_floor"] = statistics.median(
                    a / b for a, b in zip(t["svi_foreach"], t["pyro_floor"], strict=True)
                )
        result["settings"][setting_name] = {"setting": setting, "cycles": rows}
        print(f"{setting_name}: {setting}")
        for name, r in rows.items():
            print(
                f"  {name:<18} SVI {r['svi_ms']:8.2f} ms ({r['ratio']:4.2f}x)  SVI+ForeachAdam "
                f"{r['svi_foreach_ms']:8.2f} ms ({r['ratio_svi_foreach']:4.2f}x)  torch optimizer "
                f"{r['torch_optimizer_ms']:8.2f} ms ({r['ratio_torch_optimizer']:4.2f}x)  "
                f"reference {r['reference_ms']:8.2f} ms"
                + (
                    f"  Pyro floor {r['pyro_floor_ms']:8.2f} ms ({r['ratio_pyro_floor']:4.2f}x; "
                    f"SVI+ForeachAdam over it {r['svi_foreach_over_pyro_floor']:4.2f}x)"
                    if "pyro_floor_ms" in r
                    else ""
                )
            )
    result["load_average_after"] = list(os.getloadavg())
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
