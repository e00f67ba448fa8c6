r"""KL divergence from samples of :math:`q` and the density of :math:`p`, through a density model
of :math:`q` (Rosca et al., 2018, Algorithm 4).

A density model :math:`\hat q` is fitted by maximum likelihood to part of the samples of
:math:`q` and the estimate is the mean of :math:`\log\hat q - \log p` over the other, held-out,
part:

.. math::

    \mathbb{E}_q\big[\log\hat q(z) - \log p(z)\big]
        = \mathrm{KL}[q\,\|\,p] - \mathrm{KL}[q\,\|\,\hat q] \le \mathrm{KL}[q\,\|\,p].

On held-out samples the estimate is therefore a *lower bound* of the KL in expectation, whatever
the model: a poor fit (too few mixture components, a flow that is too small or trained too
briefly) only lowers it. (On the training samples an overfitted model could exceed the KL; that
is why the samples are split.) The paper's Figure 21 finds that mixtures and flows stay below the
bound :math:`\mathrm{KL}[q(z)\|p(z)] \ge \mathbb{E}_x\mathrm{KL}[q(z|x)\|p(z)] - \log N` on the
aggregate posterior of VAEs.

Models: ``"gmm"``, scikit-learn's :class:`~sklearn.mixture.GaussianMixture` (diagonal covariances
by default, as the paper), fitted on the CPU in float64; ``"flow"``, a masked autoregressive flow
from zuko (:class:`zuko.flows.MAF`), trained with Adam on standardised samples.

References:

[1] `Distribution Matching in Variational Inference`,
    Mihaela Rosca, Balaji Lakshminarayanan, Shakir Mohamed (2018)

[2] `Masked Autoregressive Flow for Density Estimation`,
    George Papamakarios, Theo Pavlakou, Iain Murray (2017)
"""

import math
from dataclasses import dataclass

import torch

from ._samples import as_samples, check_float, check_int, make_generator, randint, seeded_init
from ._samples import split as split_samples

__all__ = ["DensityModelDiagnostics", "density_model_kl"]

MODELS = ("gmm", "flow")


@dataclass
class DensityModelDiagnostics:
    r"""Diagnostics of :func:`density_model_kl` (scalars as Python floats).

    :ivar stderr: standard error of the estimate over the held-out samples (Monte Carlo only).
    :ivar heldout_log_q: mean :math:`\log\hat q` over the held-out samples.
    :ivar train_log_q: mean :math:`\log\hat q` over the training samples (far above
        ``heldout_log_q``: the model overfits).
    :ivar log_q: :math:`\log\hat q` at the held-out samples, shape ``[n_heldout]``.
    :ivar log_p: :math:`\log p` at the held-out samples, shape ``[n_heldout]``.
    :ivar losses: the flow's training loss (negative mean log-likelihood of the standardised
        samples) per step, shape ``[steps]``; ``None`` for ``"gmm"``.
    :ivar density: the fitted model: a ``GaussianMixture`` (on raw samples, numpy) or the zuko
        flow (on standardised samples, see ``loc`` and ``scale``).
    :ivar loc: mean used to standardise the samples for the flow (``None`` for ``"gmm"``).
    :ivar scale: standard deviation used to standardise them (``None`` for ``"gmm"``).
    :ivar num_train: training samples.
    :ivar num_heldout: held-out samples.
    """

    stderr: float
    heldout_log_q: float
    train_log_q: float
    log_q: torch.Tensor
    log_p: torch.Tensor
    losses: torch.Tensor | None
    density: object
    loc: torch.Tensor | None
    scale: torch.Tensor | None
    num_train: int
    num_heldout: int


def _log_p_values(log_p, q, idx):
    r"""``log p`` at the held-out samples ``q[idx]``: from a callable or from precomputed
    values aligned with ``q_samples``."""
    z = q[idx]
    if callable(log_p):
        with torch.no_grad():
            out = log_p(z)
        what = "log_p(z)"
    elif isinstance(log_p, torch.Tensor):
        if log_p.shape != (q.shape[0],):
            raise ValueError(
                f"log_p must be a callable or a tensor of shape ({q.shape[0]},) (one value per "
                f"row of q_samples), got shape {tuple(log_p.shape)}"
            )
        out = log_p.detach().to(q.device)[idx]
        what = "log_p"
    else:
        raise ValueError(f"log_p must be a callable or a tensor, got {type(log_p).__name__}")
    if not isinstance(out, torch.Tensor) or out.shape != (z.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{what} must give one value per sample, shape ({z.shape[0]},); got {shape}"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{what} has non-finite values at the held-out samples")
    return out.to(q.dtype)


def _fit_gmm(train, hold, num_components, covariance_type, max_iter, reg_covar, gen, like):
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            'density_model_kl(model="gmm") needs scikit-learn: pip install scikit-learn'
        ) from e
    if num_components > train.shape[0]:
        raise ValueError(
            f"num_components={num_components} exceeds the {train.shape[0]} training samples"
        )
    state = int(randint(2**31 - 1, (1,), gen, like).cpu())
    gmm = GaussianMixture(
        n_components=num_components,
        covariance_type=covariance_type,
        max_iter=max_iter,
        reg_covar=reg_covar,
        random_state=state,
    )
    x_train = train.cpu().double().numpy()
    gmm.fit(x_train)
    log_q_hold = torch.as_tensor(gmm.score_samples(hold.cpu().double().numpy()))
    log_q_train = torch.as_tensor(gmm.score_samples(x_train))
    return gmm, log_q_hold.to(like), log_q_train.to(like), None, None, None


def _fit_flow(train, hold, transforms, hidden_features, steps, batch_size, lr, gen, like):
    try:
        import zuko
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('density_model_kl(model="flow") needs zuko: pip install zuko') from e
    loc = train.mean(0)
    scale = train.std(0) if train.shape[0] > 1 else torch.ones_like(loc)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    log_det = scale.log().sum()
    with seeded_init(gen, like):
        flow = zuko.flows.MAF(
            train.shape[1], transforms=transforms, hidden_features=list(hidden_features)
        )
    flow = flow.to(device=like.device, dtype=like.dtype)
    optim = torch.optim.Adam(flow.parameters(), lr=lr)
    std_train = (train - loc) / scale
    losses = torch.empty(steps, dtype=like.dtype, device=like.device)
    with torch.enable_grad():
        for step in range(steps):
            batch = std_train[randint(std_train.shape[0], (batch_size,), gen, like)]
            loss = -flow().log_prob(batch).mean()
            losses[step] = loss.detach()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
    with torch.no_grad():
        dist = flow()
        log_q_hold = dist.log_prob((hold - loc) / scale) - log_det
        log_q_train = dist.log_prob(std_train) - log_det
    return flow, log_q_hold, log_q_train, losses, loc, scale


def density_model_kl(
    q_samples,
    log_p,
    model="gmm",
    *,
    holdout=0.2,
    num_components=10,
    covariance_type="diag",
    max_iter=200,
    reg_covar=1e-6,
    transforms=3,
    hidden_features=(64, 64),
    steps=2000,
    batch_size=256,
    lr=1e-3,
    seed=None,
    generator=None,
    return_diagnostics=False,
):
    r"""Estimate of :math:`\mathrm{KL}[q\|p] \approx \frac1n\sum_i \log\hat q(z_i) - \log p(z_i)`
    over held-out samples :math:`z_i \sim q`, with :math:`\hat q` a density model fitted to the
    other samples (Rosca et al., 2018, Algorithm 4). In expectation a lower bound of the KL.

    :param torch.Tensor q_samples: samples of :math:`q`, shape ``(n, d)`` or ``(n,)``.
    :param log_p: the log-density of :math:`p`: a callable mapping ``(k, d)`` samples to ``(k,)``
        values (e.g. a prior's ``log_prob`` summed over the event), or a tensor of shape ``(n,)``
        with :math:`\log p` at every row of ``q_samples`` (as
        :func:`~pyro_vsm.evaluation.aggregate_posterior_samples` returns it).
    :param str model: ``"gmm"`` (a Gaussian mixture, scikit-learn) or ``"flow"`` (a masked
        autoregressive flow, zuko).
    :param float holdout: fraction of the samples held out for the estimate, in ``(0, 1)``.
    :param int num_components: mixture components (``"gmm"``).
    :param str covariance_type: ``"diag"`` (the paper's), ``"full"``, ``"tied"`` or
        ``"spherical"`` (``"gmm"``).
    :param int max_iter: EM iterations (``"gmm"``).
    :param float reg_covar: added to the covariances' diagonals (``"gmm"``).
    :param int transforms: autoregressive transforms (``"flow"``).
    :param tuple hidden_features: hidden widths of each transform's MADE (``"flow"``).
    :param int steps: Adam steps (``"flow"``).
    :param int batch_size: samples per step (``"flow"``).
    :param float lr: Adam learning rate (``"flow"``).
    :param int seed: seeds a new generator on the samples' device (split, initialisation,
        minibatches, the mixture's k-means start); the global RNG is left untouched.
    :param torch.Generator generator: a generator to draw from instead (not with ``seed``).
    :param bool return_diagnostics: also return a :class:`DensityModelDiagnostics`.
    :returns: the estimate as a float, or ``(estimate, diagnostics)``.
    :raises ValueError: on malformed or non-finite samples or bad options, naming the argument.
    """
    q = as_samples(q_samples, "q_samples")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    holdout = check_float(holdout, "holdout", 0.0, 1.0, low_open=True, high_open=True)
    gen = make_generator(seed, generator, q.device)
    if model == "gmm":
        num_components = check_int(num_components, "num_components")
        if covariance_type not in ("diag", "full", "tied", "spherical"):
            raise ValueError(
                "covariance_type must be 'diag', 'full', 'tied' or 'spherical', got "
                f"{covariance_type!r}"
            )
        max_iter = check_int(max_iter, "max_iter")
        reg_covar = check_float(reg_covar, "reg_covar")
    else:
        transforms = check_int(transforms, "transforms")
        if isinstance(hidden_features, str) or not hasattr(hidden_features, "__iter__"):
            raise ValueError(
                f"hidden_features must be a sequence of layer widths, got {hidden_features!r}"
            )
        hidden_features = [check_int(h, "hidden_features") for h in hidden_features]
        steps = check_int(steps, "steps")
        batch_size = check_int(batch_size, "batch_size")
        lr = check_float(lr, "lr", low_open=True)

    train, hold, perm = split_samples(q, holdout, gen, "q_samples")
    log_p_hold = _log_p_values(log_p, q, perm[: hold.shape[0]])
    if model == "gmm":
        fitted = _fit_gmm(train, hold, num_components, covariance_type, max_iter, reg_covar, gen, q)
    else:
        fitted = _fit_flow(train, hold, transforms, hidden_features, steps, batch_size, lr, gen, q)
    density, log_q_hold, log_q_train, losses, loc, scale = fitted
    terms = log_q_hold - log_p_hold
    n = terms.numel()
    stats = torch.stack(
        [
            terms.mean(),
            terms.std() / math.sqrt(n) if n > 1 else terms.new_tensor(math.nan),
            log_q_hold.mean(),
            log_q_train.mean(),
        ]
    ).tolist()
    if not return_diagnostics:
        return stats[0]
    return stats[0], DensityModelDiagnostics(
        stderr=stats[1],
        heldout_log_q=stats[2],
        train_log_q=stats[3],
        log_q=log_q_hold,
        log_p=log_p_hold,
        losses=losses,
        density=density,
        loc=loc,
        scale=scale,
        num_train=train.shape[0],
        num_heldout=hold.shape[0],
    )
