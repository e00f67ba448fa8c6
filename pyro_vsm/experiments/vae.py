r"""The plain Gaussian VAE of the score-matching comparison (the ``compare_objectives`` example):
building, sampling and its held-out metrics, in the form the example uses."""

import torch

from ..evaluation import (
    ais_log_likelihood,
    importance_log_likelihood,
    marginal_kl,
    mmd,
    negative_elbo,
    reconstruction_mse,
    score_matching_loss,
)
from ..guides import DiagonalNormalEncoder
from ..models import GaussianVAE

__all__ = ["build_vae", "evaluate_vae", "sample_vae"]


def build_vae(data_dim, latent_dim=2, hidden=(30, 30), *, dtype=torch.float32, device=None):
    r"""A fresh ``GaussianVAE.mlp`` / ``DiagonalNormalEncoder.mlp`` pair.

    :param int data_dim: observation dimension.
    :param int latent_dim: latent dimension.
    :param hidden: hidden widths.
    :param dtype: parameter dtype.
    :param device: parameter device.
    """
    model = GaussianVAE.mlp(data_dim, latent_dim, hidden=tuple(hidden)).to(
        device=device, dtype=dtype
    )
    guide = DiagonalNormalEncoder.mlp(data_dim, latent_dim, hidden=tuple(hidden)).to(
        device=device, dtype=dtype
    )
    return model, guide


@torch.no_grad()
def sample_vae(model, num_samples):
    r"""Draws :math:`x \sim p(x) = \int \mathcal N(x; g(z), \gamma) \mathcal N(z; 0, I) dz` from a
    :class:`~pyro_vsm.models.GaussianVAE`.

    :param model: the VAE.
    :param int num_samples: the number of draws.
    """
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
    r"""Held-out metrics of a Gaussian VAE, means over the test set: ``test_nll`` (importance
    sampling), ``khat_above_0.7``, ``test_neg_elbo``, ``test_score_matching`` and ``gamma``; with
    ``full=True`` also ``test_nll_ais`` (AIS from the prior on the first ``ais_points`` points,
    with ``test_nll_is_same_points``), ``mmd_to_test``, ``reconstruction_mse`` and
    ``marginal_kl`` (first ``kl_points`` points). ``pyro-vsm compare`` uses the general
    :func:`~pyro_vsm.experiments.evaluate.evaluate_built` instead.

    :param model: the VAE.
    :param guide: its guide.
    :param x_test: held-out points.
    :param int eval_samples: importance samples per point.
    :param bool full: compute the expensive metrics too.
    :param int ais_temperatures: AIS annealing steps.
    :param int ais_chains: AIS chains per point.
    :param int ais_points: points evaluated by AIS.
    :param int kl_points: points of the aggregate posterior.
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
