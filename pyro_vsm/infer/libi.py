r"""LiBI (Likelihood Before Inference) and the VAE baselines it is compared with, as SVI losses.

* :class:`LiBILoss` -- the LiBI inference method of Yacoby, Pan & Doshi-Velez (Section 2 and
  Appendix D, eqs. 43--46): first the likelihood :math:`\theta` is fitted together with point
  codes :math:`z_n = h(x_n)` under smooth Gaussianity penalties on the codes, then the guide is
  fitted by the ELBO with :math:`\theta` frozen, repeated for ``num_rounds`` rounds, and the best
  round (by a validation objective) is restored;
* :class:`BetaELBO` -- the :math:`\beta`-VAE objective (Higgins et al., 2017), optionally with the
  KL weight annealed linearly from 0 (Bowman et al., 2016);
* :class:`LaggingInferenceELBO` -- aggressive inference-network training against posterior
  collapse (He et al., 2019).

All three plug into :class:`pyro.infer.SVI` (``SVI(model, guide, optim, loss=...)``); every
``svi.step`` is **one** update. Whenever only one parameter group is to move (a LiBI phase, an
aggressive step), the loss computes its objective with the parameter sites hidden from SVI's
parameter capture, accumulates gradients only into the active group and re-emits exactly those
parameters (:mod:`pyro_vsm.infer.schedule`), so SVI's optimizer never touches the frozen group:
it stays bit-identical under Adam, ClippedAdam or momentum SGD.

References

* Y. Yacoby, W. Pan, F. Doshi-Velez. *Characterizing and Avoiding Problematic Global Optima of
  Variational Autoencoders*. AABI 2020 (LiBI).
* I. Higgins et al. *beta-VAE: Learning Basic Visual Concepts with a Constrained Variational
  Framework*. ICLR 2017.
* S. R. Bowman et al. *Generating Sentences from a Continuous Space*. CoNLL 2016 (KL annealing).
* J. He, D. Spokoyny, G. Neubig, T. Berg-Kirkpatrick. *Lagging Inference Networks and Posterior
  Collapse in Variational Autoencoders*. ICLR 2019.
"""

import math
import numbers
import warnings

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..evaluation.henze_zirkler import henze_zirkler
from ..evaluation.importance import importance_log_likelihood
from .schedule import backward_into, expose_params, hide_params, routed, split_params
from .tracing import NonFiniteLossError

__all__ = ["BetaELBO", "LaggingInferenceELBO", "LiBILoss"]

_VALIDATIONS = ("elbo", "log_likelihood")


# --------------------------------------------------------------------------------------------
# helpers


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_positive(value, name, allow_none=False, allow_zero=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite {kind} number{extra}, got {value!r}")
    return float(value)


def _as_args(data, kwargs, name):
    """``(args, kwargs)`` of a validation set: a tensor is one positional argument."""
    if data is None:
        return None
    if isinstance(data, torch.Tensor):
        args = (data,)
    elif isinstance(data, tuple | list):
        args = tuple(data)
    else:
        raise TypeError(f"{name} must be a tensor or a tuple of model arguments, got {type(data)}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"{name[:-4]}kwargs must be a dict, got {type(kwargs).__name__}")
    return args, dict(kwargs or {})


def _latent_sites(guide_trace):
    """The guide's latent sample sites (not observed, not plate subsample sites), in order."""
    return [
        (name, site)
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def _float(value):
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _snapshot(params):
    return {name: p.detach().clone() for name, p in params.items()}


def _restore(params, snapshot):
    with torch.no_grad():
        for name, value in snapshot.items():
            if name in params:
                params[name].copy_(value)


class _ScaleLatents(Messenger):
    """Multiplies the log-density of every *unobserved* sample site by ``scale``.

    ``poutine.scale`` restricted to latent sites: inside the model it weights the prior terms and
    leaves the likelihood (observed sites, ``pyro.factor``) alone; inside the guide it weights
    every site. Unlike ``poutine.scale`` it accepts ``scale = 0``.
    """

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def _pyro_sample(self, msg):
        if not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


class _RoutedELBO(Trace_ELBO):
    """``Trace_ELBO`` with the helpers the alternating losses share."""

    def __init__(
        self,
        *,
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        strict_enumeration_warning=True,
        retain_graph=None,
    ):
        if isinstance(num_particles, bool) or int(num_particles) != num_particles:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            strict_enumeration_warning=strict_enumeration_warning,
            retain_graph=retain_graph,
        )

    def _elbo_terms(self, model, guide, args, kwargs):
        """``(loss, surrogate, model_traces, guide_traces)`` of the negative ELBO over particles.

        ``loss`` is a float, ``surrogate`` the tensor whose gradient is Trace_ELBO's estimator.
        """
        loss, surrogate = 0.0, 0.0
        model_traces, guide_traces = [], []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            value, surr = self._differentiable_loss_particle(model_trace, guide_trace)
            loss += value / self.num_particles
            surrogate = surrogate + surr / self.num_particles
            model_traces.append(model_trace)
            guide_traces.append(guide_trace)
        return loss, surrogate, model_traces, guide_traces

    def _step_group(self, surrogate, params):
        """Gradients of ``surrogate`` into ``params`` (a name -> tensor dict) only, and re-emits
        exactly those params so that an enclosing ``SVI.step`` steps them and nothing else."""
        if torch.is_tensor(surrogate):
            backward_into(surrogate, params.values(), retain_graph=self.retain_graph)
        expose_params(params)

    def _negative_elbo(self, model, guide, args, kwargs, num_particles=None):
        """A float estimate of the negative ELBO, no gradients, params hidden from SVI."""
        elbo = Trace_ELBO(
            num_particles=num_particles or self.num_particles,
            max_plate_nesting=self.max_plate_nesting,
            vectorize_particles=self.vectorize_particles,
        )
        with hide_params(), torch.no_grad():
            return elbo.loss(model, guide, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# beta-VAE


class BetaELBO(_RoutedELBO):
    r"""The :math:`\beta`-VAE objective (Higgins et al., 2017), optionally KL-annealed.

    .. math::

        \mathcal L_\beta(x) = \mathbb E_{q(z|x)}[\log p_\theta(x|z)]
            - \beta_t\, \mathbb E_{q(z|x)}\Big[\log \frac{q(z|x)}{p(z)}\Big],

    estimated like :class:`~pyro.infer.Trace_ELBO` (``loss`` is :math:`-\mathcal L_\beta`, summed
    over the data plate). The KL weight is applied by scaling the log-density of every
    *unobserved* sample site -- the prior terms in the model and every site of the guide -- by
    :math:`\beta_t`, i.e. ``poutine.scale`` restricted to latent sites; observed sites and
    ``pyro.factor`` terms keep weight 1. With non-reparametrised latents the score-function term
    then uses the same weighted log-ratio, so the gradient estimator is that of
    :math:`\mathcal L_\beta`.

    Annealing: with ``anneal_steps = T > 0`` the weight at training step :math:`t` (0-based, one
    step per ``svi.step``) is :math:`\beta_t = \beta \min(1, t/T)`: it ramps linearly from 0 at
    the first step to :math:`\beta` at step :math:`T` and stays there. ``anneal_steps = 0`` (the
    default) uses :math:`\beta` throughout. The clock (:attr:`step`) advances on every call of
    ``loss_and_grads`` (``svi.step``) and ``differentiable_loss``; :meth:`loss` (and so
    ``svi.evaluate_loss``) evaluates the objective at the current weight without advancing it.

    ``beta = 1`` without annealing is exactly ``Trace_ELBO`` (same samples, same value).

    :param float beta: the final KL weight :math:`\beta \ge 0`.
    :param int anneal_steps: :math:`T \ge 0`, the length of the linear warm-up.
    :param num_particles, max_plate_nesting, vectorize_particles, strict_enumeration_warning,
        retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(self, beta=1.0, anneal_steps=0, **kwargs):
        super().__init__(**kwargs)
        self.beta = _check_positive(beta, "beta", allow_zero=True)
        self.anneal_steps = _check_int(anneal_steps, "anneal_steps", 0)
        #: training steps taken so far (the annealing clock)
        self.step = 0

    @property
    def kl_weight(self):
        """The KL weight :math:`\\beta_t` the next training step uses."""
        if self.anneal_steps == 0:
            return self.beta
        return self.beta * min(1.0, self.step / self.anneal_steps)

    def _get_trace(self, model, guide, args, kwargs):
        weight = self.kl_weight
        if weight != 1.0:
            model, guide = _ScaleLatents(weight)(model), _ScaleLatents(weight)(guide)
        return super()._get_trace(model, guide, args, kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        value = super().loss_and_grads(model, guide, *args, **kwargs)
        self.step += 1
        return value

    def differentiable_loss(self, model, guide, *args, **kwargs):
        value = super().differentiable_loss(model, guide, *args, **kwargs)
        self.step += 1
        return value

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = int(state["step"])


# --------------------------------------------------------------------------------------------
# lagging inference networks


def aggregate_mutual_information(guide, *args, **kwargs):
    r"""He et al.'s estimate of :math:`I_q(x; z)` on a batch, from one run of the guide.

    With one draw :math:`z_i \sim q(z|x_i)` per point,

    .. math::

        \hat I = \frac1N \sum_i \log q(z_i|x_i)
            - \frac1N \sum_i \log \frac1N \sum_j q(z_i|x_j),

    the second term being the aggregate posterior :math:`q(z) = \frac1N\sum_j q(z|x_j)` at the
    draws (``calc_mi`` of He et al., 2019, with a Monte Carlo entropy). Every latent site must be
    a batch of ``N`` conditionally independent distributions (batch shape ``(N,)``, the data
    plate) that depend on ``x`` only; the log-densities of the sites are added.
    """
    with torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
        own, pair = 0.0, 0.0
        for name, site in _latent_sites(trace):
            fn, z = site["fn"], site["value"]
            if len(fn.batch_shape) != 1:
                raise ValueError(
                    f"aggregate_mutual_information: latent site {name!r} must have batch shape "
                    f"(N,) (one distribution per data point), got {tuple(fn.batch_shape)}"
                )
            n = fn.batch_shape[0]
            own = own + fn.log_prob(z)
            pair = pair + fn.log_prob(z.reshape((n, 1) + tuple(fn.event_shape)))  # [i, j]
        if not torch.is_tensor(own):
            raise ValueError("aggregate_mutual_information: the guide has no latent sites")
        log_qz = torch.logsumexp(pair, -1) - math.log(pair.shape[-1])
        return float((own - log_qz).mean())


class LaggingInferenceELBO(_RoutedELBO):
    r"""Aggressive inference-network training (He et al., 2019, Algorithm 1) as an SVI loss.

    Training starts in *aggressive* mode: the guide alone is updated on the ELBO (phase
    ``"guide"``) until its objective stops improving, then the model alone takes one ELBO update
    (phase ``"model"``), and this repeats. When the aggressive phase stops paying off the loss
    switches for good to plain joint ELBO updates of model and guide (phase ``"joint"``), i.e.
    ``Trace_ELBO``.

    **Inner stopping rule** (when a run of guide updates ends). The negative ELBO values of the
    guide steps are averaged over consecutive windows of ``inner_window`` steps; the run ends
    after the first window whose average is not lower than the previous window's, or after
    ``max_inner_steps`` guide steps. This is He et al.'s code (windows of 15 sub-iterations, at
    most 100).

    **Outer stopping rule** (when aggressive mode ends). On every ``check_every``-th model step
    the criterion is evaluated first -- after the guide's run of updates, before the model
    update -- on ``validation_data``, or on the arguments of that step if there is none.
    Aggressive mode ends after that model step if the criterion is lower than at the previous
    check (He et al. compare with the previous epoch's value, not the best). The default
    criterion ``"mi"`` is He et al.'s: the mutual information :math:`I_q(x; z)` of the aggregate
    posterior (:func:`aggregate_mutual_information`); ``"elbo"`` uses the ELBO (mean over
    ``criterion_particles`` draws); a callable ``criterion(model, guide, *args, **kwargs) ->
    float`` (higher is better) is accepted too. He et al. check once per epoch: set
    ``check_every`` to the number of minibatches per epoch (1, the default, for full-batch
    training).

    In aggressive mode the group that is not updated stays bit-identical (see the module
    docstring); a parameter read by both model and guide belongs to the model.

    The LiBI paper describes its "lagging" baseline differently ("divide the total number of
    epochs into R equal segments; in each train the inference network alone and then jointly");
    this class implements He et al.'s adaptive rule instead.

    :param int inner_window: guide steps per window of the inner rule.
    :param int max_inner_steps: the most guide steps per model update.
    :param int check_every: model updates between two evaluations of the outer criterion.
    :param criterion: ``"mi"``, ``"elbo"`` or a callable (higher is better).
    :param validation_data: a tensor or a tuple of model arguments for the outer criterion.
    :param dict validation_kwargs: keyword arguments for the outer criterion.
    :param int criterion_particles: particles of the ``"elbo"`` criterion.
    :param num_particles, max_plate_nesting, vectorize_particles, strict_enumeration_warning,
        retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    Attributes: :attr:`phase`, :attr:`aggressive`, :attr:`step` (updates taken),
    :attr:`criterion_history` (the criterion values, in order), :attr:`switch_step` (the step at
    which joint training began, or ``None``).
    """

    def __init__(
        self,
        *,
        inner_window=15,
        max_inner_steps=100,
        check_every=1,
        criterion="mi",
        validation_data=None,
        validation_kwargs=None,
        criterion_particles=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.inner_window = _check_int(inner_window, "inner_window", 1)
        self.max_inner_steps = _check_int(max_inner_steps, "max_inner_steps", 1)
        self.check_every = _check_int(check_every, "check_every", 1)
        if not (callable(criterion) or criterion in ("mi", "elbo")):
            raise ValueError(f"criterion must be 'mi', 'elbo' or a callable, got {criterion!r}")
        self.criterion = criterion
        self.criterion_particles = _check_int(criterion_particles, "criterion_particles", 1)
        self._validation = _as_args(validation_data, validation_kwargs, "validation_data")
        self.aggressive = True
        self.step = 0
        self.criterion_history = []
        self.switch_step = None
        self._inner_steps = 0
        self._window = []
        self._previous_window = None
        self._model_next = False
        self._model_updates = 0

    @property
    def phase(self):
        """``"guide"``, ``"model"`` (aggressive mode) or ``"joint"``: the next step's update."""
        if not self.aggressive:
            return "joint"
        return "model" if self._model_next else "guide"

    def _criterion_value(self, model, guide, args, kwargs):
        args, kwargs = self._validation or (args, kwargs)
        if callable(self.criterion):
            with hide_params():
                return float(self.criterion(model, guide, *args, **kwargs))
        if self.criterion == "mi":
            with hide_params():
                return aggregate_mutual_information(guide, *args, **kwargs)
        return -self._negative_elbo(model, guide, args, kwargs, self.criterion_particles)

    def _check(self, model, guide, args, kwargs):
        """Evaluates the outer criterion if this model step is a check; returns whether
        aggressive mode ends after this step."""
        if (self._model_updates + 1) % self.check_every:
            return False
        value = self._criterion_value(model, guide, args, kwargs)
        previous = self.criterion_history[-1] if self.criterion_history else None
        self.criterion_history.append(value)
        return previous is not None and not value >= previous

    def _end_inner(self, value):
        """Records a guide step's loss; returns whether the run of guide steps is over."""
        self._inner_steps += 1
        self._window.append(value)
        if len(self._window) == self.inner_window:
            mean = sum(self._window) / len(self._window)
            stalled = self._previous_window is not None and not mean < self._previous_window
            self._previous_window, self._window = mean, []
            if stalled:
                return True
        return self._inner_steps >= self.max_inner_steps

    def _phase_terms(self, model, guide, args, kwargs):
        with torch.enable_grad(), hide_params():
            loss, surrogate, model_traces, guide_traces = self._elbo_terms(
                model, guide, args, kwargs
            )
        model_params, guide_params = split_params(model_traces, guide_traces)
        return loss, surrogate, model_params, guide_params

    def _advance(self, phase, value, stop):
        self.step += 1
        if phase == "guide":
            if self._end_inner(value):
                self._model_next = True
        elif phase == "model":
            self._model_next = False
            self._inner_steps, self._window, self._previous_window = 0, [], None
            self._model_updates += 1
            if stop:
                self.aggressive = False
                self.switch_step = self.step

    def _aggressive_step(self, model, guide, args, kwargs):
        phase = self.phase
        stop = phase == "model" and self._check(model, guide, args, kwargs)
        loss, surrogate, model_params, guide_params = self._phase_terms(model, guide, args, kwargs)
        params = guide_params if phase == "guide" else model_params
        self._advance(phase, loss, stop)
        return loss, surrogate, params

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """One update of the schedule (see the class docstring); returns the negative ELBO."""
        if not self.aggressive:
            self.step += 1
            return super().loss_and_grads(model, guide, *args, **kwargs)
        loss, surrogate, params = self._aggressive_step(model, guide, args, kwargs)
        self._step_group(surrogate, params)
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """One update of the schedule for plain torch optimizers: the negative ELBO whose gradient
        reaches only the active group."""
        if not self.aggressive:
            self.step += 1
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss, surrogate, params = self._aggressive_step(model, guide, args, kwargs)
        if not torch.is_tensor(surrogate):
            return torch.tensor(loss, requires_grad=True)
        out = routed(surrogate, params.values())
        return loss + (out - out.detach())


# --------------------------------------------------------------------------------------------
# LiBI


def _soft_exp(u, max_exponent):
    """``exp(u)`` for ``u <= m``, continued linearly (value and slope match) above ``m``."""
    m = max_exponent
    return torch.where(u <= m, torch.exp(u.clamp(max=m)), math.exp(m) * (1.0 + u - m))


class LiBILoss(_RoutedELBO):
    r"""LiBI, *Likelihood Before Inference* (Yacoby, Pan & Doshi-Velez, Section 2 and eqs. 43--46).

    Each of ``num_rounds`` rounds :math:`t` takes

    1. ``likelihood_steps`` updates of the likelihood parameters :math:`\theta` and of the code
       network :math:`h` (phase ``"likelihood"``) on eq. 44,

       .. math::

           -\frac1N\sum_n \log p_\theta(x_n \mid h(x_n))
           + \epsilon_{HZ}\, e^{\mathrm{HZ}(\{h(x_n)\})}
           + e^{\lVert\Sigma(\{h(x_n)\}) - I\rVert^2 / \epsilon_\Sigma}
           + e^{\lVert\mu(\{h(x_n)\})\rVert^2 / \epsilon_\mu},

       with HZ the Henze--Zirkler statistic (:func:`~pyro_vsm.evaluation.henze_zirkler`),
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

    **Numerics and optimisers.** The exponential penalties are continued linearly beyond an
    exponent of ``max_exponent`` (value and slope continuous); below it they are exactly the
    paper's. Without this, codes far from :math:`\mathcal N(0, I)` (at initialisation, or when a
    round starts from guide means that phase 2 moved) give gradients whose squares overflow
    Adam's second-moment estimate in float32, which then freezes the parameters. Even bounded,
    such a gradient spike makes Adam's step sizes tiny for about :math:`1/(1 - \beta_2)` steps
    afterwards; :class:`~pyro.optim.ClippedAdam` (gradient-norm clipping) avoids this and is the
    recommended optimiser here. The HZ statistic is computed with ``hz_jitter`` on the codes'
    correlation matrix (see :func:`~pyro_vsm.evaluation.henze_zirkler`), which keeps degenerate
    codes finite.

    Only the observed sites of the model enter :math:`\log p_\theta(x_n \mid z_n)`; every
    latent site must have a guide site (latent sites of the model that the guide lacks would be
    drawn from the prior in phase 1).

    **Model selection.** At the end of each round (lazily, at the first step of the next round,
    i.e. on the parameters the round's last update produced) the validation score is computed
    on ``validation_data`` (a tensor or a tuple of model arguments, with ``validation_kwargs``),
    or on the arguments of that step if there is none: ``"elbo"`` (default; the ELBO with
    ``validation_particles`` particles), ``"log_likelihood"`` (the mean importance-sampled
    :math:`\log p(x)` with the guide inflated to twice its variance and ``validation_samples``
    samples, as in the paper's evaluation) or a callable ``validation(model, guide, *args,
    **kwargs) -> float``; higher is better, ties keep the earlier round, NaN never wins.
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
    :param float hz_jitter: see :func:`~pyro_vsm.evaluation.henze_zirkler`.
    :param code_fn: optional code network (see above).
    :param validation_data: held-out arguments for model selection (see above).
    :param dict validation_kwargs: their keyword arguments.
    :param validation: ``"elbo"``, ``"log_likelihood"`` or a callable.
    :param int validation_particles: particles of the ``"elbo"`` score.
    :param int validation_samples: importance samples of the ``"log_likelihood"`` score.
    :param num_particles, max_plate_nesting, vectorize_particles, strict_enumeration_warning,
        retain_graph: as for :class:`~pyro.infer.Trace_ELBO` (phase 2).
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
        validation_samples=1000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.likelihood_steps = _check_int(likelihood_steps, "likelihood_steps", 1)
        self.inference_steps = _check_int(inference_steps, "inference_steps", 1)
        self.num_rounds = _check_int(num_rounds, "num_rounds", 1)
        self.eps_hz = _check_positive(eps_hz, "eps_hz", allow_zero=True)
        self.eps_sigma = _check_positive(eps_sigma, "eps_sigma", allow_none=True)
        self.eps_mu = _check_positive(eps_mu, "eps_mu", allow_none=True)
        self.max_exponent = _check_positive(max_exponent, "max_exponent")
        self.hz_jitter = _check_positive(hz_jitter, "hz_jitter", allow_zero=True)
        if code_fn is not None and not callable(code_fn):
            raise TypeError(f"code_fn must be callable, got {type(code_fn).__name__}")
        self.code_fn = code_fn
        if not (callable(validation) or validation in _VALIDATIONS):
            raise ValueError(
                f"validation must be 'elbo', 'log_likelihood' or a callable, got {validation!r}"
            )
        self.validation = validation
        self.validation_particles = _check_int(validation_particles, "validation_particles", 1)
        self.validation_samples = _check_int(validation_samples, "validation_samples", 1)
        self._validation = _as_args(validation_data, validation_kwargs, "validation_data")
        #: schedule steps taken so far
        self.step = 0
        #: validation score of each finished round (higher is better)
        self.round_scores = []
        #: index of the round whose parameters are (or will be) restored, or None
        self.best_round = None
        #: parts of the last phase-1 objective, per data point (floats)
        self.last_terms = {}
        self._best = None  # (score, snapshot)
        self._params = {}  # name -> leaf tensor of every parameter seen
        self._warned_done = False

    # ----------------------------------------------------------------------------------------
    # schedule

    @property
    def total_steps(self):
        """``num_rounds * (likelihood_steps + inference_steps) + 1`` (the last one selects)."""
        return self.num_rounds * (self.likelihood_steps + self.inference_steps) + 1

    def _phase_at(self, step):
        cycle = self.likelihood_steps + self.inference_steps
        if step < self.num_rounds * cycle:
            return "likelihood" if step % cycle < self.likelihood_steps else "inference"
        return "select" if step == self.num_rounds * cycle else "done"

    @property
    def phase(self):
        """``"likelihood"`` (Step 1), ``"inference"`` (Step 2), ``"select"`` or ``"done"``: the
        update the next step takes."""
        return self._phase_at(self.step)

    @property
    def round(self):
        """The (0-based) round the next step belongs to (the last round once finished)."""
        cycle = self.likelihood_steps + self.inference_steps
        return min(self.step // cycle, self.num_rounds - 1)

    def _round_just_ended(self):
        cycle = self.likelihood_steps + self.inference_steps
        return (
            self.step > 0 and self.step % cycle == 0 and len(self.round_scores) < self.step // cycle
        )

    # ----------------------------------------------------------------------------------------
    # phase 1: the likelihood with penalised codes

    def _codes(self, guide, args, kwargs):
        """``({site: code tensor}, codes (n, p), traces that read the code parameters)``."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        latents = _latent_sites(guide_trace)
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

    def _likelihood_terms(self, model, guide, args, kwargs):
        """``(objective, terms, model_traces, other_traces)`` of phase 1 (N times eq. 44)."""
        by_site, codes, code_traces = self._codes(guide, args, kwargs)
        model_trace = poutine.trace(poutine.condition(model, data=by_site)).get_trace(
            *args, **kwargs
        )
        log_lik = model_trace.log_prob_sum(
            lambda name, site: site["is_observed"] and name not in by_site
        )
        n, p = codes.shape
        scale = model_trace.nodes[next(iter(by_site))]["scale"]
        num_data = n * _float(torch.as_tensor(scale).mean())
        mean = codes.mean(0)
        centred = codes - mean
        cov = centred.T @ centred / n
        eye = torch.eye(p, dtype=codes.dtype, device=codes.device)
        cov_err = ((cov - eye) ** 2).sum()
        mean_err = (mean**2).sum()
        penalty = torch.zeros((), dtype=codes.dtype, device=codes.device)
        # diagnostics stay detached tensors: no host sync inside the training step
        terms = {"cov_error": cov_err.detach(), "mean_error": mean_err.detach()}
        if self.eps_hz > 0:
            hz = henze_zirkler(codes, jitter=self.hz_jitter)
            penalty = penalty + self.eps_hz * _soft_exp(hz, self.max_exponent)
            terms["hz"] = hz.detach()
        if self.eps_sigma is not None:
            penalty = penalty + _soft_exp(cov_err / self.eps_sigma, self.max_exponent)
        if self.eps_mu is not None:
            penalty = penalty + _soft_exp(mean_err / self.eps_mu, self.max_exponent)
        objective = -log_lik + num_data * penalty
        terms["log_likelihood"] = log_lik.detach() / num_data
        terms["penalty"] = penalty.detach()
        terms["objective"] = objective.detach() / num_data
        return objective, terms, [model_trace], code_traces

    def _likelihood_phase(self, model, guide, args, kwargs, need_grads=True):
        """``(objective, terms, active params, their gradients)`` of phase 1: the active params
        are those the objective depends on; computed with the params hidden from SVI."""
        with torch.enable_grad(), hide_params():
            objective, terms, model_traces, code_traces = self._likelihood_terms(
                model, guide, args, kwargs
            )
        model_params, other = split_params(model_traces, code_traces)
        self._track(model_params, other)
        candidates = {n: p for n, p in {**model_params, **other}.items() if p.requires_grad}
        if not objective.requires_grad or not candidates:
            return objective, terms, {}, []
        grads = torch.autograd.grad(
            objective, list(candidates.values()), allow_unused=True, retain_graph=not need_grads
        )
        active = {
            n: p for (n, p), g in zip(candidates.items(), grads, strict=True) if g is not None
        }
        grads = [g for g in grads if g is not None]
        return objective, terms, active, grads

    # ----------------------------------------------------------------------------------------
    # phase 2 and model selection

    def _inference_phase(self, model, guide, args, kwargs):
        with torch.enable_grad(), hide_params():
            loss, surrogate, model_traces, guide_traces = self._elbo_terms(
                model, guide, args, kwargs
            )
        model_params, guide_params = split_params(model_traces, guide_traces)
        self._track(model_params, guide_params)
        return loss, surrogate, guide_params

    def _track(self, *groups):
        for group in groups:
            self._params.update(group)

    def _validation_score(self, model, guide, args, kwargs):
        args, kwargs = self._validation or (args, kwargs)
        if callable(self.validation):
            with hide_params():
                return float(self.validation(model, guide, *args, **kwargs))
        if self.validation == "elbo":
            return -self._negative_elbo(model, guide, args, kwargs, self.validation_particles)
        with hide_params(), torch.no_grad():
            log_px = importance_log_likelihood(
                model,
                guide,
                *args,
                num_samples=self.validation_samples,
                proposal_scale=math.sqrt(2.0),
                progress=False,
                **kwargs,
            )
        return float(log_px.mean())

    def _close_round(self, model, guide, args, kwargs):
        score = self._validation_score(model, guide, args, kwargs)
        self.round_scores.append(score)
        better = self._best is None or (
            not math.isnan(score) and (math.isnan(self._best[0]) or score > self._best[0])
        )
        if better:
            self._best = (score, _snapshot(self._params))
            self.best_round = len(self.round_scores) - 1

    def restore_best(self):
        """Copies the best round's parameters back (in place); done by the ``"select"`` step."""
        if self._best is not None:
            _restore(self._params, self._best[1])

    # ----------------------------------------------------------------------------------------
    # ELBO interface

    def _before_step(self, model, guide, args, kwargs):
        """Closes a finished round; returns the phase of this step."""
        phase = self.phase
        if self._round_just_ended() and phase != "done":
            self._close_round(model, guide, args, kwargs)
        if phase == "select":
            self.restore_best()
        elif phase == "done" and not self._warned_done:
            warnings.warn(
                f"LiBILoss: all {self.total_steps} steps were taken; further steps do not update "
                "any parameter",
                RuntimeWarning,
                stacklevel=3,
            )
            self._warned_done = True
        return phase

    def loss(self, model, guide, *args, **kwargs):
        """The objective of the phase the next step takes (N times eq. 44 in phase 1, else the
        negative ELBO), as a float. Takes no step."""
        if self.phase == "likelihood":
            with hide_params(), torch.no_grad():
                objective, _, _, _ = self._likelihood_terms(model, guide, args, kwargs)
            return _float(objective)
        return self._negative_elbo(model, guide, args, kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """One step of the schedule: gradients for the active group only (see the class)."""
        phase = self._before_step(model, guide, args, kwargs)
        if phase == "likelihood":
            objective, terms, active, grads = self._likelihood_phase(model, guide, args, kwargs)
            value = _float(objective)
            if not math.isfinite(value):
                parts = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                raise NonFiniteLossError(
                    f"LiBILoss: non-finite phase-1 objective at step {self.step} ({parts})"
                )
            for p, g in zip(active.values(), grads, strict=True):
                p.grad = g.detach() if p.grad is None else p.grad + g.detach()
            expose_params(active)
            self.last_terms = terms
        elif phase == "inference":
            value, surrogate, guide_params = self._inference_phase(model, guide, args, kwargs)
            self._step_group(surrogate, guide_params)
        else:  # select / done: no update
            value = self._negative_elbo(model, guide, args, kwargs)
        self.step += 1
        return value

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """One step of the schedule for plain torch optimizers: the phase's objective with its
        gradient routed to the active group only (a detached value on select/done steps)."""
        phase = self._before_step(model, guide, args, kwargs)
        if phase == "likelihood":
            objective, terms, active, _ = self._likelihood_phase(
                model, guide, args, kwargs, need_grads=False
            )
            self.last_terms = terms
            out = routed(objective, active.values())
        elif phase == "inference":
            loss, surrogate, guide_params = self._inference_phase(model, guide, args, kwargs)
            if torch.is_tensor(surrogate):
                out = routed(surrogate, guide_params.values())
                out = loss + (out - out.detach())  # the value of Trace_ELBO's differentiable_loss
            else:
                out = torch.tensor(loss, requires_grad=True)
        else:  # no update: a value a torch optimizer loop can still call backward() on
            out = torch.tensor(self._negative_elbo(model, guide, args, kwargs), requires_grad=True)
        self.step += 1
        return out
