r"""Losses for VAEs with energy-based (unnormalized) priors.

Sections 2–2.3 and Algorithms 1–2 of [1]. The model
has a latent site whose prior is an :class:`~pyro_vsm.distributions.EnergyDistribution`
(:math:`\tilde p_\beta(z) = e^{-E_\beta(z)}`, ``is_normalized = False``), so Pyro's ELBO
computes the **analogous lower bound** (ALB)

.. math::

    \mathcal L_{\text{ALB}}(x) = \mathbb E_{q_\phi(z|x)}\big[\log p_\alpha(x|z) - E_\beta(z)
        - \log q_\phi(z|x)\big] = \mathcal L_{\text{vae}}(x) + \log Z_\beta,

which has the right gradients for the decoder :math:`\alpha` and the guide :math:`\phi`
(:math:`\log Z_\beta` depends on neither) and the wrong ones for the energy :math:`\beta`. The
losses here train decoder and guide on the ALB and give the energy its own objective:

* :class:`SSMPriorLoss` (Algorithm 1): sliced score matching of the energy to the aggregate
  posterior, on detached posterior samples;
* :class:`~pyro_vsm.infer.adversarial_prior.AdversarialPriorLoss` (Algorithm 2): a variational prior
  :math:`q_\zeta(z)` (a normalising flow) maximises the lower bound :math:`\mathbb
  E_{q_\zeta}[-E_\beta - \log q_\zeta] \le \log Z_\beta` and the energy takes contrastive-divergence
  steps between posterior and :math:`q_\zeta` samples;
* :class:`ImportanceWeightedPriorLoss` (eq. 5): :math:`\log Z_\beta` estimated by
  self-normalised importance sampling with the guide's samples. **The paper shows that this
  fails** (Section 4.1): the guide matches the posterior, not the prior, so the estimate of
  :math:`\log Z` and its gradient (eq. 7) are badly biased and high-variance, and the prior
  converges to a poor solution. It is provided as the baseline of that experiment.

**Parameter groups.** On every step the loss finds the *prior* parameters: the parameters the model
reads (``pyro.param`` sites of the model trace) that the prior's log-density at the energy site(s)
depends on (autograd connectivity of :math:`\log\tilde p(z)` at a detached ``z``, so energies
registered with ``pyro.module`` and :class:`~pyro.nn.PyroModule` energies both work, as do
parameters of an ``EnergyDistribution``'s ``base``). Every other parameter of the model and the
guide belongs to the *VAE* group (decoder and guide). A parameter read by both the energy and the
decoder counts as a prior parameter. The variational prior of
:class:`~pyro_vsm.infer.adversarial_prior.AdversarialPriorLoss` is a third group. Each group
receives the gradient of its own objective only (``backward`` with ``inputs=`` the group), and
``svi.step`` updates all groups at once. Use a per-parameter learning rate for the paper's setting
(VAE ``1e-3``, prior ``2e-4``); Pyro passes the parameter's name (``"energy.W"`` for
:class:`~pyro_vsm.models.EnergyPriorVAE`, ``"energy.W"`` too for ``pyro.module("energy", ...)``)::

    Adam(lambda name: {"lr": 2e-4 if name.startswith("energy.") else 1e-3})

``loss(model, guide)`` gives an :class:`~pyro.infer.elbo.ELBOModule` whose value is the loss
and whose backward pass puts each group's own gradient on its parameters (one differentiable
surrogate per group, routed with :func:`~pyro_vsm.infer.grouped.routed`), so a plain torch
optimizer reproduces ``SVI``.

All values are summed over the data plate (scaled by plate subsampling) and averaged over
``num_particles``, like ``Trace_ELBO``.

References:

[1] `Variational Inference with Unnormalized Priors`,
    anonymous authors (under double-blind review)

[2] `Sliced Score Matching: A Scalable Approach to Density and Score Estimation`,
    Yang Song, Sahaj Garg, Jiaxin Shi, Stefano Ermon (2020)
"""

import math
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from torch import nn

from .._checks import positive_int
from ..ops.score_matching import check_projection, ssm_terms
from ..ops.sites import energy_sites, unwrap_energy_distribution
from .elbo_terms import elbo_particle, elbo_site_terms
from .grouped import GroupedLoss, Objective, split_params, trace_params

__all__ = ["EnergyPriorLoss", "ImportanceWeightedPriorLoss", "SSMPriorLoss"]


# ----------------------------------------------------------------------------------------------
# objectives and their routing
# ----------------------------------------------------------------------------------------------
class EnergyPriorLoss(GroupedLoss):
    r"""Shared machinery: particles, the energy sites, the ALB and the parameter groups.

    The base of :class:`SSMPriorLoss`, :class:`ImportanceWeightedPriorLoss` and
    :class:`~pyro_vsm.infer.adversarial_prior.AdversarialPriorLoss`; a subclass supplies the
    energy's objective.

    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(
        self,
        *,
        num_particles=1,
        max_plate_nesting=float("inf"),
        vectorize_particles=False,
        retain_graph=None,
    ):
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
        )

    # -- pieces --------------------------------------------------------------------------------
    def _prior_params(self, candidates, site_log_densities):
        r"""The params among ``candidates`` on which the prior log-densities depend."""
        names = [n for n, p in candidates.items() if p.requires_grad]
        total = sum(lp.sum() for lp in site_log_densities if lp.requires_grad)
        if not names or not torch.is_tensor(total) or not total.requires_grad:
            return {}
        grads = torch.autograd.grad(
            total, [candidates[n] for n in names], allow_unused=True, retain_graph=True
        )
        return {n: candidates[n] for n, g in zip(names, grads, strict=True) if g is not None}

    def _check_registered(self, sites, prior):
        if prior:
            return
        for name, site in sites:
            ed = unwrap_energy_distribution(site["fn"])
            energy = getattr(ed, "energy", None)
            if isinstance(energy, nn.Module) and any(p.requires_grad for p in energy.parameters()):
                raise ValueError(
                    f"{type(self).__name__}: the energy of site '{name}' "
                    f"({type(energy).__name__}) has trainable parameters that are not Pyro "
                    "params, so no optimizer would update them: register it in the model with "
                    "pyro.module('energy', energy) (or make it a submodule of a PyroModule model)"
                )

    def _prior_objectives(self, particles, ctx):  # pragma: no cover - abstract
        raise NotImplementedError

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        r"""All objectives of one step (the negative ALB first)."""
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sites = energy_sites(model_trace, type(self).__name__)
            particles.append((model_trace, guide_trace, sites))
        model_params, guide_params = split_params(
            [p[0] for p in particles], [p[1] for p in particles]
        )
        ctx = _Context(
            num_particles=self.num_particles,
            create_graph=create_graph,
            model_params=model_params,
            guide_params=guide_params,
        )
        # energies that are PyroModules emit their param sites when they are evaluated (here,
        # after the model ran): capture them as candidates of the prior group
        with poutine.trace(param_only=True) as capture:
            prior_objectives = self._prior_objectives(particles, ctx)
        prior = {}
        if create_graph:
            candidates = dict(model_params)
            for n, p in trace_params(capture.trace).items():
                candidates.setdefault(n, p)
            prior = self._prior_params(candidates, ctx.log_densities)
            self._check_registered(particles[0][2], prior)
        for o in prior_objectives:
            if o.params is None:
                o.params = prior
        alb, surrogate = 0.0, 0.0
        for model_trace, guide_trace, _ in particles:
            a, s = elbo_particle(model_trace, guide_trace)
            alb = alb + a / self.num_particles
            surrogate = surrogate + s / self.num_particles
        like = particles[0][2][0][1]["value"]
        alb = self._tensor_like(alb, like)
        surrogate = self._tensor_like(surrogate, like)
        vae = {n: p for n, p in model_params.items() if n not in prior}
        vae.update({n: p for n, p in guide_params.items() if n not in prior})
        alb_params = {**vae, **prior} if self._alb_trains_prior else vae
        pairs = [(m, g) for m, g, _ in particles]
        neg_alb = Objective(
            "neg_alb",
            -alb,
            alb_params,
            surrogate=-surrogate,
            sites=lambda: elbo_site_terms(pairs, self.num_particles),
        )
        return [neg_alb] + prior_objectives

    @staticmethod
    def _tensor_like(value, like):
        if torch.is_tensor(value):
            return value
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    @staticmethod
    def _site_sum(term, site, num_particles):
        return scale_and_mask(term, site["scale"], site["mask"]).sum() / num_particles

    #: whether the energy receives the ALB's gradient (only for the importance-weighted loss,
    #: whose eq. 7 gradient is the ALB's plus the self-normalised log Z term's)
    _alb_trains_prior = False

    def terms(self, model, guide, *args, **kwargs):
        r"""The loss and each group's objective value for the current parameters, as floats:
        ``{"loss": ..., "neg_alb": ..., ...}`` (names as in the class docstring). Takes no step.

        :param model: the model.
        :param guide: the guide.
        :param args: positional arguments of the model and guide.
        :param kwargs: keyword arguments of the model and guide.
        :returns: ``{name: float}``.
        """
        with torch.enable_grad():
            objectives = self._objectives(
                model, guide, args, kwargs, phase=self.phase, create_graph=False
            )
        out = {"loss": float(self._total(objectives))}
        out.update({o.name: float(o.value.detach()) for o in objectives})
        return out


@dataclass
class _Context:
    num_particles: int
    create_graph: bool
    model_params: dict
    guide_params: dict
    log_densities: list = field(default_factory=list)  # prior log-densities, 1st particle


# ----------------------------------------------------------------------------------------------
# Algorithm 1: sliced score matching
# ----------------------------------------------------------------------------------------------
class SSMPriorLoss(EnergyPriorLoss):
    r"""Energy-prior VAE training with sliced score matching (Algorithm 1 of [1]).

    Per step, with :math:`z \sim q_\phi(z|x)`:

    * decoder and guide ascend the analogous lower bound :math:`\mathcal L_{\text{ALB}}` (the
      ELBO with :math:`-E_\beta(z)` for :math:`\log p(z)`; reparametrised, with Trace_ELBO's
      score-function terms for non-reparametrisable guide sites);
    * the energy descends the sliced score-matching objective
      :math:`J_\beta = \mathbb E_{q_\phi(z|x)\pi(x)}\mathbb E_v[\tfrac12\lVert s\rVert^2 +
      v^\top\nabla_z(v^\top s)]`, :math:`s = -\nabla_z E_\beta(z)`, on **detached** posterior
      samples (the same ``z`` as the ALB), i.e. score matching of the prior to the aggregate
      posterior (:func:`~pyro_vsm.ops.sliced_score_matching` [2], ``create_graph=True``).

    The energy gets no ALB gradient and decoder/guide get no score-matching gradient. The value
    returned by ``svi.step`` and :meth:`loss` is :math:`-\mathcal L_{\text{ALB}} + J_\beta`
    (both summed over the data plate); :meth:`terms` gives ``"neg_alb"`` and ``"ssm"``
    separately. Note that :math:`-\mathcal L_{\text{ALB}} = -\mathcal L_{\text{vae}} - \log Z`
    is not a bound on :math:`-\log p(x)`; evaluate the model with
    :func:`pyro_vsm.evaluation.energy_prior_log_likelihood`.

    :param int num_projections: projections :math:`v` per sample.
    :param str projection: ``"rademacher"`` or ``"gaussian"`` (both have :math:`\mathbb E[vv^\top]
        = I`).
    :param bool variance_reduction: use :math:`\tfrac12\lVert s\rVert^2` (exact in :math:`v`)
        instead of :math:`\tfrac12(v^\top s)^2`.
    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)

    [2] `Sliced Score Matching: A Scalable Approach to Density and Score Estimation`,
        Yang Song, Sahaj Garg, Jiaxin Shi, Stefano Ermon (2020)
    """

    def __init__(
        self,
        num_projections=1,
        projection="rademacher",
        variance_reduction=True,
        **kwargs,
    ):
        check_projection(projection)
        self.num_projections = positive_int(num_projections, "num_projections")
        self.projection = projection
        self.variance_reduction = bool(variance_reduction)
        super().__init__(**kwargs)

    def _prior_objectives(self, particles, ctx):
        total = 0.0
        for i, (_, _, sites) in enumerate(particles):
            lps = []
            for _, site in sites:
                j, lp = ssm_terms(
                    site["fn"].log_prob,
                    site["value"],
                    len(site["fn"].event_shape),
                    self.num_projections,
                    self.projection,
                    self.variance_reduction,
                    ctx.create_graph,
                )
                lps.append(lp)
                total = total + self._site_sum(j, site, ctx.num_particles)
            if i == 0:
                ctx.log_densities = lps
        like = particles[0][2][0][1]["value"]
        total = self._tensor_like(total, like)
        return [Objective("ssm", total, None)]


# ----------------------------------------------------------------------------------------------
# eq. 5: self-normalised importance-weighted log Z
# ----------------------------------------------------------------------------------------------
class ImportanceWeightedPriorLoss(EnergyPriorLoss):
    r"""The importance-weighted estimate of the VLB, eq. 5 (Section 2.1 of [1]).

    .. math::

        \mathcal L(x) = \mathbb E_{q}[\log p_\alpha(x|z) - E_\beta(z) - \log q(z|x)]
            - \log \frac1K\sum_{k=1}^K e^{-E_\beta(z_k) - \log q(z_k|x)},
            \qquad z_k \sim q(z|x),

    with the ``K = num_samples`` guide samples per data point serving both terms. The second term
    estimates :math:`\log Z_\beta` by importance sampling with the guide as proposal; it is
    computed at detached samples and guide densities, so it trains only the energy, whose
    gradient is then eq. 7 (the ALB's :math:`-\mathbb E_q[\nabla E]` plus the self-normalised
    :math:`\sum_k \bar w_k \nabla E(z_k)`); decoder and guide get the ALB's gradient.

    .. warning:: The paper shows that this estimator **fails** in practice (Sections 2.1 and
       4.1): the guide approximates the posterior :math:`p(z|x)`, not the prior, so its samples
       do not represent :math:`e^{-E}`; :math:`\log \hat Z` is strongly biased (low) and its
       gradient high-variance, and the prior converges to a poor solution. Prefer
       :class:`SSMPriorLoss` or :class:`~pyro_vsm.infer.adversarial_prior.AdversarialPriorLoss`.

    The value is :math:`-\mathcal L` summed over the data plate (:meth:`terms`: ``"neg_alb"`` and
    ``"log_z"``, the per-point :math:`\log\hat Z` summed over the plate). For finite ``K``
    :math:`\log\hat Z` is biased low (Jensen), so the value is biased low too.

    :param int num_samples: ``K``, guide samples per data point (= ``num_particles``).
    :param int num_particles: alias of ``num_samples`` (Pyro's name).
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)
    """

    _alb_trains_prior = True

    def __init__(self, num_samples=None, *, num_particles=None, **kwargs):
        if num_samples is None:
            num_samples = 16 if num_particles is None else num_particles
        elif num_particles is not None and num_particles != num_samples:
            raise ValueError(
                f"ImportanceWeightedPriorLoss: num_samples={num_samples!r} and "
                f"num_particles={num_particles!r} disagree (they are the same K)"
            )
        super().__init__(num_particles=num_samples, **kwargs)

    @property
    def num_samples(self):
        r"""``K``, the guide samples per data point (the same as ``num_particles``)."""
        return self.num_particles

    def _log_weights(self, site, guide_site, create_graph):
        r"""``(log w, -E(z) at detached z)`` with the particle dim first."""
        z = site["value"].detach()
        lp = site["fn"].log_prob(z)
        if not create_graph:
            lp = lp.detach()
        log_q = guide_site["unscaled_log_prob"].detach()
        return lp - log_q, lp

    def _prior_objectives(self, particles, ctx):
        first_model_trace, first_guide_trace, sites = particles[0]
        total = 0.0
        all_lps = []
        for name, site in sites:
            mask = site["mask"]
            if mask is not None and not (
                mask is True or (torch.is_tensor(mask) and bool(mask.all()))
            ):
                raise ValueError(
                    "ImportanceWeightedPriorLoss: masked energy-prior sites are not supported "
                    f"(site '{name}')"
                )
            if self.vectorize_particles:
                log_w, lp = self._log_weights(site, first_guide_trace.nodes[name], ctx.create_graph)
                all_lps.append(lp)
                if self.num_particles > 1:
                    nb = self.max_plate_nesting
                    log_w = log_w.reshape((1,) * (nb - log_w.dim()) + log_w.shape)
                else:
                    log_w = log_w.unsqueeze(0)
                scale = site["scale"]
            else:
                parts = []
                for model_trace, guide_trace, _ in particles:
                    s = model_trace.nodes[name]
                    lw, lp = self._log_weights(s, guide_trace.nodes[name], ctx.create_graph)
                    if model_trace is first_model_trace:
                        all_lps.append(lp)
                    parts.append(lw)
                log_w = torch.stack(torch.broadcast_tensors(*parts), 0)
                scale = site["scale"]
            k = log_w.shape[0]
            log_z = torch.logsumexp(log_w, 0) - math.log(k)
            total = total + scale_and_mask(log_z, scale, None).sum()
        ctx.log_densities = all_lps
        like = sites[0][1]["value"]
        total = self._tensor_like(total, like)
        return [Objective("log_z", total, None)]
