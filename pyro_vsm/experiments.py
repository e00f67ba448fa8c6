"""Training and evaluating Gaussian VAEs with each objective: the shared core of ``pyro-vsm
compare`` and ``examples/compare_objectives.py``.

Objective names (inference objective, then learning objective, as in Wenliang, 2022, Section 5):

======================  =====================================================================
``elbo``                ``Trace_ELBO`` (joint updates)
``m1-kl``/``m1-fisher`` :class:`~pyro_vsm.M1Loss` with KL / Fisher (no reparametrisation) inference
``m2-kl``/``m2-fisher`` :class:`~pyro_vsm.M2Loss`
``m3-kl``/``m3-fisher`` :class:`~pyro_vsm.M3Loss` (``bilevel_steps=K``)
``joint-fisher``        :class:`~pyro_vsm.JointFisherLoss`
======================  =====================================================================
"""

import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from tqdm.auto import tqdm

from .evaluation import (
    ais_log_likelihood,
    importance_log_likelihood,
    marginal_kl,
    mmd,
    negative_elbo,
    reconstruction_mse,
    score_matching_loss,
)
from .guides import DiagonalNormalEncoder
from .infer import JointFisherLoss, M1Loss, M2Loss, M3Loss
from .models import GaussianVAE

OBJECTIVE_NAMES = (
    "elbo",
    "m1-kl",
    "m1-fisher",
    "m2-kl",
    "m2-fisher",
    "m3-kl",
    "m3-fisher",
    "joint-fisher",
)


def make_objective(name, *, particles=1, guide_steps=1, bilevel_steps=0, max_plate_nesting=1):
    """The loss object for an objective name (see the module docstring).

    M2 and M3 estimate squared means with a U-statistic and so use at least 2 particles.
    """
    kw = dict(
        num_particles=particles, vectorize_particles=True, max_plate_nesting=max_plate_nesting
    )
    if name == "elbo":
        return Trace_ELBO(**kw)
    if name == "joint-fisher":
        return JointFisherLoss(**kw)
    try:
        learning, inference = name.split("-")
        cls = {"m1": M1Loss, "m2": M2Loss, "m3": M3Loss}[learning]
    except (ValueError, KeyError):
        raise ValueError(
            f"unknown objective {name!r}; choose from {', '.join(OBJECTIVE_NAMES)}"
        ) from None
    if inference not in ("kl", "fisher"):
        raise ValueError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVE_NAMES)}")
    if cls is not M1Loss:
        kw["num_particles"] = max(particles, 2)
    if cls is M3Loss:
        kw["bilevel_steps"] = bilevel_steps
    return cls(inference=inference, guide_steps=guide_steps, **kw)


def build_vae(data_dim, latent_dim=2, hidden=(30, 30), *, dtype=torch.float32, device=None):
    """A fresh ``GaussianVAE.mlp`` / ``DiagonalNormalEncoder.mlp`` pair."""
    model = GaussianVAE.mlp(data_dim, latent_dim, hidden=tuple(hidden)).to(
        device=device, dtype=dtype
    )
    guide = DiagonalNormalEncoder.mlp(data_dim, latent_dim, hidden=tuple(hidden)).to(
        device=device, dtype=dtype
    )
    return model, guide


def train_steps(
    svi, x_train, steps, batch_size, *, start=0, progress=False, desc=None, callback=None
):
    """``svi.step`` on minibatches drawn with replacement (``num_data`` set for plate scaling).

    ``callback(step)`` runs after every step (``step`` counts from ``start + 1``).
    """
    n = x_train.shape[0]
    for step in tqdm(
        range(start, steps),
        desc=desc,
        disable=not progress,
        leave=False,
        initial=start,
        total=steps,
    ):
        idx = torch.randint(n, (batch_size,), device=x_train.device)
        svi.step(x_train[idx], num_data=n)
        if callback is not None:
            callback(step + 1)


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
    """Trains a fresh :func:`build_vae` pair with ``loss`` and Adam.

    Returns ``(model, guide, seconds)``.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model, guide = build_vae(
        x_train.shape[-1], latent_dim, hidden, dtype=x_train.dtype, device=x_train.device
    )
    svi = SVI(model, guide, Adam({"lr": lr}), loss=loss)
    start = time.perf_counter()
    train_steps(svi, x_train, steps, batch_size, progress=progress, desc=desc)
    return model, guide, time.perf_counter() - start


@torch.no_grad()
def sample_vae(model, num_samples):
    """Draws ``x ~ p(x) = ∫ N(x; g(z), γ) N(z; 0, I) dz`` from a :class:`GaussianVAE`."""
    ref = next(model.parameters())
    z = torch.randn(num_samples, model.latent_dim, dtype=ref.dtype, device=ref.device)
    loc = model.decoder(z)
    return loc + model.variance().sqrt() * torch.randn_like(loc)


def evaluate_vae(
    model,
    guide,
    x_test,
    *,
    eval_samples=1000,
    full=False,
    ais_temperatures=200,
    ais_chains=8,
    ais_points=100,
    kl_points=500,
):
    """Held-out metrics, means over the test set:

    ``test_nll`` (importance sampling, guide as proposal), ``khat_above_0.7`` (share of test points
    whose PSIS k̂ flags that estimate), ``test_neg_elbo``, ``test_score_matching`` (Hyvärinen's
    loss of the model's marginal, lower is better) and the learned observation variance
    ``gamma``. With ``full=True`` also ``test_nll_ais`` (AIS from the prior on the first
    ``ais_points`` test points, with ``test_nll_is_same_points`` for comparison),
    ``mmd_to_test`` (unbiased MMD², RBF with median heuristic, between model samples and the test
    set), ``reconstruction_mse`` and ``marginal_kl`` (aggregate posterior of the first
    ``kl_points`` test points against the prior).
    """
    log_px, diag = importance_log_likelihood(
        model, guide, x_test, num_samples=eval_samples, return_diagnostics=True, progress=False
    )
    out = {
        "test_nll": -log_px.mean().item(),
        "khat_above_0.7": (diag.khat > 0.7).double().mean().item(),
        "test_neg_elbo": negative_elbo(model, guide, x_test, num_samples=64).mean().item(),
        "test_score_matching": score_matching_loss(
            model, guide, x_test, num_samples=min(eval_samples, 1000)
        )
        .mean()
        .item(),
        "gamma": model.variance().mean().item(),
    }
    if not full:
        return out
    sub = x_test[:ais_points]
    ais = ais_log_likelihood(
        model, sub, num_temperatures=ais_temperatures, num_chains=ais_chains, progress=False
    )
    out["test_nll_ais"] = -ais.mean().item()
    out["test_nll_is_same_points"] = -log_px[: sub.shape[0]].mean().item()
    out["mmd_to_test"] = mmd(sample_vae(model, x_test.shape[0]), x_test).item()
    out["reconstruction_mse"] = reconstruction_mse(model, guide, x_test).mean().item()
    out["marginal_kl"] = marginal_kl(model, guide, x_test[:kl_points]).item()
    return out
