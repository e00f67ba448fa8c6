r"""The held-out metrics of ``pyro-vsm compare``/``evaluate``, the same for every objective.

Per held-out point (lower is better unless said otherwise):

* ``test_nll``: :math:`-\log p(x)` by importance sampling with the guide as proposal, and
  ``khat_above_0.7``: the share of points whose PSIS :math:`\hat k` flags that estimate;
* ``test_nll_ais``: :math:`-\log p(x)` by AIS on the first ``ais_points`` points, from the prior
  (or from the guide where the prior cannot be sampled exactly), with
  ``test_nll_is_same_points`` for comparison;
* ``test_neg_elbo``: the negative ELBO (64 draws);
* ``test_score_matching``: Hyvärinen's score-matching loss of :math:`p(x)` (continuous
  observations);
* ``mmd_to_test`` (unbiased MMD², RBF kernel, median heuristic) and ``smooth_knn`` (Djolonga &
  Krause's statistic) between as many model draws as held-out points and the held-out data;
* ``reconstruction_mse``: decoded posterior mean;
* ``marginal_kl``: :math:`\mathrm{KL}[q(z)\|p(z)]` of the aggregate posterior of the first
  ``kl_points`` points, and ``active_units``: latent dimensions whose posterior mean varies
  over the held-out points (variance > 0.01, Burda et al.'s criterion);
* ``gamma``: the learnt observation variance.

For an energy (unnormalised) prior every log-density above is corrected by :math:`\log Z`: exact
where the energy has it (``log_z_method = "exact"``), else by AIS, a stochastic lower bound that
makes NLLs, the negative ELBO and the marginal KL **optimistic** (listed under ``optimistic``).
A metric that does not apply is ``None`` with its reason under ``not_applicable``; one that
failed or came out non-finite is ``None`` with the message under ``errors``.
"""

import torch
from pyro import poutine

from ..evaluation import (
    AISOptions,
    ais_log_likelihood,
    importance_log_likelihood,
    marginal_kl,
    mmd,
    negative_elbo,
    reconstruction_mse,
    score_matching_loss,
    smooth_knn_statistic,
)
from ..ops.sites import latent_sites

__all__ = ["METRICS", "evaluate_built", "log_likelihood", "posterior_means"]

#: the metrics of every report entry, in table order
METRICS = (
    "test_nll",
    "khat_above_0.7",
    "test_nll_ais",
    "test_nll_is_same_points",
    "test_neg_elbo",
    "test_score_matching",
    "mmd_to_test",
    "smooth_knn",
    "reconstruction_mse",
    "marginal_kl",
    "active_units",
    "gamma",
)
#: metrics that contain log Z (optimistic when it is estimated)
USES_LOG_Z = ("test_nll", "test_nll_ais", "test_nll_is_same_points", "test_neg_elbo", "marginal_kl")
ACTIVE_THRESHOLD = 0.01


def _flat(x):
    return x.reshape(x.shape[0], -1)


@torch.no_grad()
def posterior_means(guide, x):
    r"""``(N, k)``: the guide's mean of every latent site at each point, flattened and joined.

    :param guide: the guide, called as ``guide(x)``.
    :param x: the data.
    """
    trace = poutine.trace(poutine.block(guide, hide_types=["param"])).get_trace(x)
    means = [_flat(site["fn"].mean) for _, site in latent_sites(trace)]
    return torch.cat(means, -1)


def log_likelihood(built, x, num_samples, log_z=0.0, **kwargs):
    r"""Per-point :math:`\log p(x)` by importance sampling, corrected by ``log_z`` (call inside
    ``built.evaluation_mode()``).

    :param Built built: the trained objective.
    :param x: the points.
    :param int num_samples: importance samples per point.
    :param float log_z: :math:`\log Z` of an energy prior (0 for normalised priors).
    :param kwargs: passed to :func:`~pyro_vsm.evaluation.importance_log_likelihood`.
    """
    out = importance_log_likelihood(
        built.model, built.guide, x, num_samples=num_samples, progress=False, **kwargs
    )
    if isinstance(out, tuple):
        return out[0] - log_z, out[1]
    return out - log_z


class _Row:
    def __init__(self, not_applicable):
        self.values = {m: None for m in METRICS}
        self.not_applicable = dict(not_applicable)
        self.errors = {}

    def compute(self, keys, fn):
        keys = (keys,) if isinstance(keys, str) else keys
        if any(k in self.not_applicable for k in keys):
            return
        try:
            values = fn()
        except (ValueError, RuntimeError, FloatingPointError, NotImplementedError) as e:
            for k in keys:
                self.errors[k] = str(e).splitlines()[0] if str(e) else type(e).__name__
            return
        values = values if isinstance(values, tuple) else (values,)
        for k, v in zip(keys, values, strict=True):
            v = float(v)
            if v == v and abs(v) != float("inf"):
                self.values[k] = v
            else:
                self.errors[k] = "non-finite"


def evaluate_built(
    built,
    x_test,
    *,
    eval_samples=1000,
    ais_temperatures=200,
    ais_points=1000,
    ais_chains=8,
    kl_points=500,
):
    r"""The held-out metrics of a trained objective (see the module docstring); a dict.

    :param Built built: the trained objective.
    :param x_test: held-out points.
    :param int eval_samples: importance samples per point.
    :param int ais_temperatures: AIS annealing steps.
    :param int ais_points: points evaluated by AIS (the first ones).
    :param int ais_chains: AIS chains per point.
    :param int kl_points: points of the aggregate posterior of the marginal KL.
    """
    model, guide = built.model, built.guide
    row = _Row(built.not_applicable)
    if "test_nll_ais" in row.not_applicable:
        row.not_applicable.setdefault("test_nll_is_same_points", "no AIS estimate to compare")
    if "test_nll" in row.not_applicable:
        row.not_applicable.setdefault("test_nll_is_same_points", "no importance-sampling estimate")
    out = {}
    with built.evaluation_mode():
        shift = 0.0
        if built.log_z is not None:
            log_z, exact = built.log_z()
            shift = float(log_z)
            out["log_z"] = shift
            out["log_z_method"] = "exact" if exact else "AIS (optimistic)"
            if not exact:
                out["optimistic"] = list(USES_LOG_Z)
        log_px = {}

        def importance():
            log_px["is"], diag = log_likelihood(
                built, x_test, eval_samples, shift, return_diagnostics=True
            )
            return -log_px["is"].mean(), (diag.khat > 0.7).double().mean()

        row.compute(("test_nll", "khat_above_0.7"), importance)
        sub = x_test[:ais_points]

        def ais():
            start = guide if built.ais_start == "guide" else None
            # the potential traced once (compile=True): the default 200 temperatures are below
            # AISOptions' automatic threshold, yet tracing makes the held-out AIS a third faster
            est = ais_log_likelihood(
                model,
                sub,
                guide=start,
                options=AISOptions(
                    num_temperatures=ais_temperatures, num_chains=ais_chains, compile=True
                ),
                progress=False,
            )
            return -(est - shift).mean()

        row.compute("test_nll_ais", ais)
        if "is" in log_px and row.values["test_nll_ais"] is not None:
            row.compute("test_nll_is_same_points", lambda: -log_px["is"][: sub.shape[0]].mean())
        elif "test_nll_is_same_points" not in row.not_applicable:
            row.errors["test_nll_is_same_points"] = (
                "no estimate to compare (see test_nll, test_nll_ais)"
            )
        out["nll_ais_start"] = None if "test_nll_ais" in row.not_applicable else built.ais_start
        row.compute(
            "test_neg_elbo",
            lambda: negative_elbo(model, guide, x_test, num_samples=64).mean() + shift,
        )
        row.compute(
            "test_score_matching",
            lambda: score_matching_loss(
                model, guide, x_test, num_samples=min(eval_samples, 1000)
            ).mean(),
        )
        draws = {}

        def two_sample():
            draws["means"], draws["x"] = built.sample(x_test.shape[0])
            return mmd(_flat(draws["x"]), _flat(x_test))

        row.compute("mmd_to_test", two_sample)
        if "x" in draws:
            row.compute(
                "smooth_knn", lambda: smooth_knn_statistic(_flat(draws["x"]), _flat(x_test))
            )
        row.compute("reconstruction_mse", lambda: reconstruction_mse(model, guide, x_test).mean())
        row.compute("marginal_kl", lambda: marginal_kl(model, guide, x_test[:kl_points]) + shift)
        row.compute(
            "active_units",
            lambda: (posterior_means(guide, x_test).var(0) > ACTIVE_THRESHOLD).sum(),
        )
        variance = getattr(model, "variance", None)
        if callable(variance) and variance() is not None:
            row.compute("gamma", lambda: variance().detach().mean())
        else:
            row.not_applicable.setdefault("gamma", "no Gaussian observation variance")
    out.update(row.values)
    # the units counted by active_units: the coordinates of z (n + 1 on the sphere S^n)
    out["latent_dim"] = getattr(model, "coordinates", getattr(model, "latent_dim", None))
    out["not_applicable"] = row.not_applicable
    out["errors"] = row.errors
    return out
