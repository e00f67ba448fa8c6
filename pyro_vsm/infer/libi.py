r"""LiBI (Likelihood Before Inference) as an SVI loss on the grouped-loss core."""

import math
import warnings

import torch
from pyro import poutine

from .._checks import as_call_args, check_int, check_positive
from ..ops.henze_zirkler import henze_zirkler
from ..ops.sites import latent_sites
from .distributed import all_gather_rows, mean_over_processes
from .elbo_terms import negative_elbo_terms
from .grouped import GroupedLoss, Objective, hide_params, split_params, trace_params
from .lagging import negative_elbo_estimate
from .schedules import RoundsSchedule

__all__ = ["LiBILoss"]

_VALIDATIONS = ("elbo",)


def _soft_exp(u, max_exponent):
    r"""``exp(u)`` for ``u <= m``, continued linearly (value and slope match) above ``m``."""
    m = max_exponent
    return torch.where(u <= m, torch.exp(u.clamp(max=m)), math.exp(m) * (1.0 + u - m))


class LiBILoss(GroupedLoss):
    r"""LiBI, *Likelihood Before Inference* (Yacoby, Pan & Doshi-Velez, Section 2 and eqs. 43--46).

    Each of ``num_rounds`` rounds :math:`t` takes

    1. ``likelihood_steps`` updates of the likelihood parameters :math:`\theta` and of the code
       network :math:`h` (phase ``"likelihood"``) on eq. 44,

       .. math::

           -\frac1N\sum_n \log p_\theta(x_n \mid h(x_n))
           + \epsilon_{HZ}\, e^{\mathrm{HZ}(\{h(x_n)\})}
           + e^{\lVert\Sigma(\{h(x_n)\}) - I\rVert^2 / \epsilon_\Sigma}
           + e^{\lVert\mu(\{h(x_n)\})\rVert^2 / \epsilon_\mu},

       with HZ the Henze--Zirkler statistic (:func:`~pyro_vsm.ops.henze_zirkler`),
       :math:`\mu, \Sigma` the empirical mean and covariance (divisor :math:`n`) of the codes
       and :math:`\lVert\cdot\rVert` the Euclidean norm, elementwise (Frobenius) for the
       matrix (the paper's :math:`\lVert\cdot\rVert_2^2`; the spectral norm would not be
       smooth). :math:`\epsilon_{HZ}` is a weight, :math:`\epsilon_\Sigma, \epsilon_\mu` are
       tolerances, exactly as in eq. 44 (the paper's grids: :math:`\epsilon_{HZ} \in
       \{0.001, 1, 10, 20\}`, :math:`\epsilon_\Sigma, \epsilon_\mu \in \{0.2, 0.5\}`,
       :math:`R \in \{1, 6\}`). The prior :math:`\log p(z_n)` is *not* in the objective (it would shrink the codes,
       Appendix D, eqs. 34--41; the penalties pin them to :math:`\mathcal N(0, I)` instead);
    2. ``inference_steps`` updates of the guide by the ELBO with :math:`\theta` frozen (phase
       ``"inference"``; eqs. 45--46);
    3. the next round's phase 1 starts from the guide's means (Step 3).

    After the last round one more step (phase ``"select"``) evaluates the last round and
    restores, in place, the parameters (model and guide) of the round with the best validation
    score; it takes no update. Run :attr:`total_steps` ``svi.step`` calls in all; later steps
    (phase ``"done"``) take no update either and warn.

    **The code network** :math:`h`. By default :math:`h(x)` is the mean of the guide:
    phase 1 runs the guide and takes ``site["fn"].mean`` of its latent site(s) (several sites are
    concatenated along the last dim, each flattened to ``(n, -1)``). So Step 3 ("initialise
    :math:`h` at the guide's means") is built in, and phase 2 in turn starts the guide from the
    code network phase 1 trained (the paper does not say where :math:`\phi` starts). Phase 1
    moves exactly the guide parameters the means depend on (the paper trains :math:`h` in
    Step 1); guide parameters that only set the spread (e.g. a separate log-scale) stay
    untouched. With a guide whose mean and scale share layers, the shared layers move in
    phase 1 and phase 2 refits them. Alternatively pass ``code_fn(*args, **kwargs)`` returning
    the codes (a tensor for a single latent site, or a ``{site: tensor}`` dict), e.g.
    ``lambda x: guide.loc_net(x)`` for a guide whose distribution has no ``.mean``. The
    parameters the codes depend on are trained in phase 1 whatever they are; if ``code_fn`` is
    a network separate from the guide, Step 3 is not applied.

    **Scaling and batches.** Following Pyro's convention (values summed over the data plate, as
    ``Trace_ELBO``), phase 1 minimises :math:`N` times eq. 44: the log-likelihood summed over the
    plate plus :math:`N` times the penalties, where :math:`N` is the batch size times the
    latent site's scale (the plate's full size under subsampling). This has the minimisers of
    eq. 44 and gradients on the scale of the ELBO's. The penalties are computed on the batch
    passed to the step (the paper uses the full data set; pass the full data or large batches).
    Under data parallelism (DDP) they are computed on the codes of *every* process's batch
    (gathered differentiably), so the gradient DDP averages is that of the penalties on the
    union of the batches; the validation score of a round is the mean over processes, so every
    process restores the same round.

    **Numerics and optimisers.** The exponential penalties are continued linearly beyond an
    exponent of ``max_exponent`` (value and slope continuous); below it they are exactly the
    paper's. Without this, codes far from :math:`\mathcal N(0, I)` (at initialisation, or when a
    round starts from guide means that phase 2 moved) give gradients whose squares overflow
    Adam's second-moment estimate in float32, which then freezes the parameters. Even bounded,
    such a gradient spike makes Adam's step sizes tiny for about :math:`1/(1 - \beta_2)` steps
    afterwards; :class:`~pyro.optim.ClippedAdam` (gradient-norm clipping) avoids this and is the
    recommended optimiser here. The HZ statistic is computed with ``hz_jitter`` on the codes'
    correlation matrix (see :func:`~pyro_vsm.ops.henze_zirkler`), which keeps degenerate
    codes finite.

    Only the observed sites of the model enter :math:`\log p_\theta(x_n \mid z_n)`; every
    latent site must have a guide site (latent sites of the model that the guide lacks would be
    drawn from the prior in phase 1).

    **Model selection.** At the end of each round (lazily, at the first step of the next round,
    i.e. on the parameters the round's last update produced) the validation score is computed
    on ``validation_data`` (a tensor or a tuple of model arguments, with ``validation_kwargs``),
    or on the arguments of that step if there is none: ``"elbo"`` (default; the ELBO with
    ``validation_particles`` particles) or a callable ``validation(model, guide, *args,
    **kwargs) -> float``, e.g. the paper's choice, the mean importance-sampled :math:`\log p(x)`
    with the guide inflated to twice its variance:
    ``validation=pyro_vsm.evaluation.log_likelihood_validation(num_samples=1000)``; higher is
    better, ties keep the earlier round, NaN never wins.
    :attr:`round_scores` and :attr:`best_round` record the outcome.

    **Values.** ``svi.step`` returns the objective of the update it took: :math:`N` times eq. 44
    in phase 1 (its parts, per data point, are in :attr:`last_terms` as detached scalar tensors),
    the negative ELBO in phase
    2 and afterwards. :meth:`loss` (``svi.evaluate_loss``) returns the objective of the phase the
    next step takes, without taking a step.

    ``loss(model, guide)`` gives an :class:`~pyro.infer.elbo.ELBOModule` whose forward is one
    step of the same schedule with gradients routed to the active group only.

    :param int likelihood_steps: phase-1 updates per round (>= 1).
    :param int inference_steps: phase-2 updates per round (>= 1).
    :param int num_rounds: :math:`R \ge 1`.
    :param float eps_hz: :math:`\epsilon_{HZ} \ge 0`, the weight of :math:`e^{HZ}` (0 drops it).
    :param eps_sigma: :math:`\epsilon_\Sigma > 0` (``None`` drops the covariance penalty).
    :param eps_mu: :math:`\epsilon_\mu > 0` (``None`` drops the mean penalty).
    :param float max_exponent: where the exponential penalties turn linear.
    :param float hz_jitter: see :func:`~pyro_vsm.ops.henze_zirkler`.
    :param code_fn: optional code network (see above).
    :param validation_data: held-out arguments for model selection (see above).
    :param dict validation_kwargs: their keyword arguments.
    :param validation: ``"elbo"`` or a callable.
    :param int validation_particles: particles of the ``"elbo"`` score.
    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO` (phase 2).
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO` (phase 2).
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Characterizing and Avoiding Problematic Global Optima of Variational Autoencoders`,
        Yaniv Yacoby, Weiwei Pan, Finale Doshi-Velez (2020)
    """

    def __init__(
        self,
        likelihood_steps=1000,
        inference_steps=1000,
        num_rounds=1,
        *,
        eps_hz=1.0,
        eps_sigma=0.2,
        eps_mu=0.2,
        max_exponent=20.0,
        hz_jitter=1e-6,
        code_fn=None,
        validation_data=None,
        validation_kwargs=None,
        validation="elbo",
        validation_particles=16,
        **kwargs,
    ):
        schedule = RoundsSchedule(likelihood_steps, inference_steps, num_rounds)
        super().__init__(schedule=schedule, **kwargs)
        self.eps_hz = check_positive(eps_hz, "eps_hz", allow_zero=True)
        self.eps_sigma = check_positive(eps_sigma, "eps_sigma", allow_none=True)
        self.eps_mu = check_positive(eps_mu, "eps_mu", allow_none=True)
        self.max_exponent = check_positive(max_exponent, "max_exponent")
        self.hz_jitter = check_positive(hz_jitter, "hz_jitter", allow_zero=True)
        if code_fn is not None and not callable(code_fn):
            raise TypeError(f"code_fn must be callable, got {type(code_fn).__name__}")
        self.code_fn = code_fn
        if not (callable(validation) or validation in _VALIDATIONS):
            raise ValueError(
                "validation must be 'elbo' or a callable (for the importance-sampled log p(x): "
                f"pyro_vsm.evaluation.log_likelihood_validation()), got {validation!r}"
            )
        self.validation = validation
        self.validation_particles = check_int(validation_particles, "validation_particles", 1)
        self._validation = as_call_args(validation_data, validation_kwargs, "validation_data")
        self._best_params = None  # {name: tensor} of the best round
        self._warned_done = False

    # ----------------------------------------------------------------------------------------
    # schedule

    @property
    def likelihood_steps(self):
        r"""Phase-1 updates per round."""
        return self.schedule.likelihood_steps

    @property
    def inference_steps(self):
        r"""Phase-2 updates per round."""
        return self.schedule.inference_steps

    @property
    def num_rounds(self):
        r"""The number of rounds :math:`R`."""
        return self.schedule.num_rounds

    @property
    def total_steps(self):
        r"""``num_rounds * (likelihood_steps + inference_steps) + 1`` (the last one selects)."""
        return self.schedule.total_steps

    @property
    def round(self):
        r"""The (0-based) round the next step belongs to (the last round once finished)."""
        return self.schedule.round

    @property
    def round_scores(self):
        r"""The validation score of each finished round (higher is better)."""
        return self.schedule.round_scores

    @property
    def best_round(self):
        r"""The index of the round whose parameters are (or will be) restored, or ``None``."""
        return self.schedule.best_round

    # ----------------------------------------------------------------------------------------
    # phase 1: the likelihood with penalised codes

    def _codes(self, guide, args, kwargs):
        r"""``({site: code tensor}, codes (n, p), traces that read the code parameters)``."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        latents = latent_sites(guide_trace)
        if not latents:
            raise ValueError("LiBILoss: the guide has no latent sample sites")
        if self.code_fn is None:
            by_site = {}
            for name, site in latents:
                try:
                    by_site[name] = site["fn"].mean
                except NotImplementedError:
                    raise ValueError(
                        f"LiBILoss: the guide's distribution at site {name!r} "
                        f"({type(site['fn']).__name__}) has no .mean; pass code_fn"
                    ) from None
            traces = [guide_trace]
        else:
            code_trace = poutine.trace(self.code_fn)
            out = code_trace(*args, **kwargs)
            traces = [guide_trace, code_trace.trace]
            if isinstance(out, dict):
                by_site = dict(out)
                unknown = set(by_site) - {name for name, _ in latents}
                if unknown:
                    raise ValueError(f"LiBILoss: code_fn returned unknown site(s) {unknown}")
            elif len(latents) == 1:
                by_site = {latents[0][0]: out}
            else:
                raise ValueError(
                    "LiBILoss: with several latent sites code_fn must return a {site: codes} dict"
                )
        flat = []
        for name, site in latents:
            if name not in by_site:
                continue
            value = by_site[name]
            if not torch.is_tensor(value) or value.shape != site["value"].shape:
                raise ValueError(
                    f"LiBILoss: codes for site {name!r} must have the site's shape "
                    f"{tuple(site['value'].shape)}, got {getattr(value, 'shape', value)!r}"
                )
            if len(site["fn"].batch_shape) != 1:
                raise ValueError(
                    f"LiBILoss: latent site {name!r} must have batch shape (n,) (the data plate), "
                    f"got {tuple(site['fn'].batch_shape)}"
                )
            flat.append(value.reshape(value.shape[0], -1))
        if not flat:
            raise ValueError("LiBILoss: no codes for any latent site")
        return by_site, torch.cat(flat, -1), traces

    def _likelihood_objective(self, model, guide, args, kwargs):
        r"""Phase 1 (``N`` times eq. 44): its objective, diagnostics and candidate parameters."""
        by_site, codes, code_traces = self._codes(guide, args, kwargs)
        model_trace = poutine.trace(poutine.condition(model, data=by_site)).get_trace(
            *args, **kwargs
        )
        log_lik = model_trace.log_prob_sum(
            lambda name, site: site["is_observed"] and name not in by_site
        )
        n = codes.shape[0]
        scale = model_trace.nodes[next(iter(by_site))]["scale"]
        num_data = n * (scale.mean() if torch.is_tensor(scale) else float(scale))
        codes = all_gather_rows(codes)  # the codes of every process (DDP)
        n_all, p = codes.shape
        mean = codes.mean(0)
        centred = codes - mean
        cov = centred.T @ centred / n_all
        eye = torch.eye(p, dtype=codes.dtype, device=codes.device)
        cov_err = ((cov - eye) ** 2).sum()
        mean_err = (mean**2).sum()
        penalty = torch.zeros((), dtype=codes.dtype, device=codes.device)
        parts = {"cov_error": cov_err, "mean_error": mean_err}
        if self.eps_hz > 0:
            hz = henze_zirkler(codes, jitter=self.hz_jitter, check=False)
            penalty = penalty + self.eps_hz * _soft_exp(hz, self.max_exponent)
            parts["hz"] = hz
        if self.eps_sigma is not None:
            penalty = penalty + _soft_exp(cov_err / self.eps_sigma, self.max_exponent)
        if self.eps_mu is not None:
            penalty = penalty + _soft_exp(mean_err / self.eps_mu, self.max_exponent)
        objective = -log_lik + num_data * penalty
        parts["log_likelihood"] = log_lik / num_data
        parts["penalty"] = penalty
        parts["objective"] = objective / num_data
        model_params, other = split_params([model_trace], code_traces)
        # phase 2 trains the guide's parameters: say so before it first runs, so that elements of
        # guide tensors phase 1 does not reach (the scale rows of a shared output layer) are held
        # fixed from the first round on
        for name in trace_params(code_traces[0]):
            if name not in model_params:
                self._members.setdefault(name, set()).add("inference")
        return Objective(
            "likelihood",
            objective,
            {**model_params, **other},
            sites=lambda: {k: v.detach() for k, v in parts.items()},
            parts={k: v.detach() for k, v in parts.items()},
        )

    # ----------------------------------------------------------------------------------------
    # rounds and model selection

    def _params_by_name(self, model, guide, args, kwargs):
        r"""``{name: tensor}`` of every parameter the model, the guide and ``code_fn`` read."""
        with hide_params(), torch.no_grad(), poutine.trace(param_only=True) as capture:
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            poutine.replay(model, trace=guide_trace)(*args, **kwargs)
            if self.code_fn is not None:
                self.code_fn(*args, **kwargs)
        return trace_params(capture.trace)

    def _validation_score(self, model, guide, args, kwargs):
        args, kwargs = self._validation or (args, kwargs)
        if callable(self.validation):
            with hide_params():
                return float(self.validation(model, guide, *args, **kwargs))
        return -negative_elbo_estimate(self, model, guide, args, kwargs, self.validation_particles)

    def _before_step(self, model, guide, args, kwargs):
        r"""Scores a finished round (keeping the best round's parameters), restores the best
        round on the ``"select"`` step and warns once when steps are taken after the end."""
        phase = self.phase
        if self.schedule.round_ended and phase != "done":
            score = mean_over_processes(self._validation_score(model, guide, args, kwargs))
            if self.schedule.record_round(score):
                params = self._params_by_name(model, guide, args, kwargs)
                self._best_params = {n: p.detach().clone() for n, p in params.items()}
        if phase == "select":
            self.restore_best(model, guide, *args, **kwargs)
        elif phase == "done" and not self._warned_done:
            warnings.warn(
                f"LiBILoss: all {self.total_steps} steps were taken; further steps do not update "
                "any parameter",
                RuntimeWarning,
                stacklevel=4,
            )
            self._warned_done = True

    def restore_best(self, model, guide, *args, **kwargs):
        r"""Copies the best round's parameters back in place (done by the ``"select"`` step).

        :param model: the model.
        :param guide: the guide.
        """
        if self._best_params is None:
            return
        params = self._params_by_name(model, guide, args, kwargs)
        with torch.no_grad():
            for name, value in self._best_params.items():
                if name in params:
                    params[name].copy_(value)

    # ----------------------------------------------------------------------------------------
    # the grouped-loss interface

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        if phase == "likelihood":
            return [self._likelihood_objective(model, guide, args, kwargs)]
        if phase == "inference":
            terms = negative_elbo_terms(self, model, guide, args, kwargs)
            return [
                Objective(
                    "inference",
                    terms.value,
                    terms.guide_params,
                    surrogate=terms.surrogate,
                    sites=terms.sites,
                )
            ]
        with torch.no_grad():  # select / done: no update, the negative ELBO is reported
            terms = negative_elbo_terms(self, model, guide, args, kwargs)
        return [Objective("neg_elbo", terms.value, {}, sites=terms.sites)]

    def _evaluate(self, model, guide, args, kwargs):
        r"""The objective of the phase the next step takes (``N`` times eq. 44 in phase 1, else
        the negative ELBO)."""
        with hide_params(), torch.no_grad():
            if self.phase == "likelihood":
                return self._likelihood_objective(model, guide, args, kwargs).value
            return negative_elbo_terms(self, model, guide, args, kwargs).value

    def _extra_state(self):
        return {"best_params": self._best_params, "warned_done": self._warned_done}

    def _load_extra_state(self, state):
        best = state["best_params"]
        self._best_params = None if best is None else {n: v.clone() for n, v in best.items()}
        self._warned_done = bool(state["warned_done"])
