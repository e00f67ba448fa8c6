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

from .evaluation import importance_log_likelihood, negative_elbo, score_matching_loss
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
    """Trains a fresh ``GaussianVAE.mlp``/``DiagonalNormalEncoder.mlp`` pair with ``loss``.

    Each ``svi.step`` draws a minibatch (with replacement) and passes ``num_data`` so plates
    scale like the full data set. Returns ``(model, guide, seconds)``.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    device, dim = x_train.device, x_train.shape[-1]
    model = GaussianVAE.mlp(dim, latent_dim, hidden=hidden).to(device=device, dtype=x_train.dtype)
    guide = DiagonalNormalEncoder.mlp(dim, latent_dim, hidden=hidden).to(
        device=device, dtype=x_train.dtype
    )
    svi = SVI(model, guide, Adam({"lr": lr}), loss=loss)
    n = x_train.shape[0]
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(n, (batch_size,), device=device)
        svi.step(x_train[idx], num_data=n)
    return model, guide, time.perf_counter() - start


def evaluate_vae(model, guide, x_test, *, eval_samples=1000):
    """Held-out metrics per test point (means over the test set, nats):

    ``test_nll`` (importance sampling, guide as proposal), ``khat_above_0.7`` (share of test points
    whose PSIS k̂ flags that estimate), ``test_neg_elbo``, ``test_score_matching`` (Hyvärinen's
    loss of the model's marginal, lower is better) and the learned observation variance ``gamma``.
    """
    log_px, diag = importance_log_likelihood(
        model, guide, x_test, num_samples=eval_samples, return_diagnostics=True, progress=False
    )
    return {
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
