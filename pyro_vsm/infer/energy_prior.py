"""Losses for VAEs with energy-based (unnormalized) priors.

"Variational inference with unnormalized priors" (Sections 2–2.3, Algorithms 1–2). The model
has a latent site whose prior is an :class:`~pyro_vsm.distributions.EnergyDistribution`
(:math:`\\tilde p_\\beta(z) = e^{-E_\\beta(z)}`, ``is_normalized = False``), so Pyro's ELBO
computes the **analogous lower bound** (ALB)

.. math::

    \\mathcal L_{\\text{ALB}}(x) = \\mathbb E_{q_\\phi(z|x)}\\big[\\log p_\\alpha(x|z) - E_\\beta(z)
        - \\log q_\\phi(z|x)\\big] = \\mathcal L_{\\text{vae}}(x) + \\log Z_\\beta,

which has the right gradients for the decoder :math:`\\alpha` and the guide :math:`\\phi`
(:math:`\\log Z_\\beta` depends on neither) and the wrong ones for the energy :math:`\\beta`. The
losses here train decoder and guide on the ALB and give the energy its own objective:

* :class:`SSMPriorLoss` (Algorithm 1): sliced score matching of the energy to the aggregate
  posterior, on detached posterior samples;
* :class:`AdversarialPriorLoss` (Algorithm 2): a variational prior :math:`q_\\zeta(z)` (a
  normalising flow) maximises the lower bound :math:`\\mathbb E_{q_\\zeta}[-E_\\beta - \\log
  q_\\zeta] \\le \\log Z_\\beta` and the energy takes contrastive-divergence steps between posterior
  and :math:`q_\\zeta` samples;
* :class:`ImportanceWeightedPriorLoss` (eq. 5): :math:`\\log Z_\\beta` estimated by
  self-normalised importance sampling with the guide's samples. **The paper shows that this
  fails** (Section 4.1): the guide matches the posterior, not the prior, so the estimate of
  :math:`\\log Z` and its gradient (eq. 7) are badly biased and high-variance, and the prior
  converges to a poor solution. It is provided as the baseline of that experiment.

**Parameter groups.** On every step the loss finds the *prior* parameters: the parameters the
model reads (``pyro.param`` sites of the model trace) that the prior's log-density at the energy
site(s) depends on (autograd connectivity of :math:`\\log\\tilde p(z)` at a detached ``z``, so
energies registered with ``pyro.module`` and :class:`~pyro.nn.PyroModule` energies both work, as
do parameters of an ``EnergyDistribution``'s ``base``). Every other parameter of the model and
the guide belongs to the *VAE* group (decoder and guide). A parameter read by both the energy and
the decoder counts as a prior parameter. The variational prior of :class:`AdversarialPriorLoss`
is a third group. Each group receives the gradient of its own objective only (``backward`` with
``inputs=`` the group), and ``svi.step`` updates all groups at once. Use a per-parameter
learning rate for the paper's setting (VAE ``1e-3``, prior ``2e-4``); Pyro passes the
parameter's name (``"energy.W"`` for :class:`~pyro_vsm.models.EnergyPriorVAE`, ``"energy.W"`` too
for ``pyro.module("energy", ...)``)::

    Adam(lambda name: {"lr": 2e-4 if name.startswith("energy.") else 1e-3})

``loss(model, guide)`` gives an :class:`~pyro.infer.elbo.ELBOModule` whose value is the loss
and whose backward pass puts each group's own gradient on its parameters (one differentiable
surrogate per group, routed with :func:`~pyro_vsm.infer.grouped.routed`), so a plain torch
optimizer reproduces ``SVI``.

All values are summed over the data plate (scaled by plate subsampling) and averaged over
``num_particles``, like ``Trace_ELBO``.
"""

import math
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch import nn

from .._checks import positive_int
from .elbo_terms import elbo_particle, elbo_site_terms
from .grouped import GroupedLoss, Objective, split_params, trace_params

__all__ = [
    "AdversarialPriorLoss",
    "GaussianVariationalPrior",
    "ImportanceWeightedPriorLoss",
    "SSMPriorLoss",
    "energy_sites",
    "iaf_prior",
    "is_unnormalized",
    "sliced_score_matching",
]

PROJECTIONS = ("rademacher", "gaussian")


# ----------------------------------------------------------------------------------------------
# sliced score matching
# ----------------------------------------------------------------------------------------------
def _sum_event(t, event_dim):
    return t.sum(tuple(range(-event_dim, 0))) if event_dim else t


def _projection(like, kind):
    if kind == "rademacher":
        return torch.empty_like(like).bernoulli_(0.5) * 2 - 1
    return torch.randn_like(like)


def _check_projection(projection):
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")


def _ssm(
    log_density,
    value,
    event_dim,
    num_projections,
    projection,
    variance_reduction,
    create_graph,
):
    """``(J, log_density(z))`` per element, ``z`` a detached leaf copy of ``value``."""
    z = value.detach().requires_grad_(True)
    with torch.enable_grad():
        lp = log_density(z)
        if not torch.is_tensor(lp) or lp.shape != z.shape[: z.dim() - event_dim]:
            got = tuple(lp.shape) if torch.is_tensor(lp) else type(lp).__name__
            raise ValueError(
                f"sliced_score_matching: the log-density returned {got} for a value of shape "
                f"{tuple(z.shape)} with event_dim={event_dim}"
            )
        if not lp.requires_grad:  # constant in z: zero score, zero divergence
            zero = torch.zeros_like(lp)
            return zero, lp
        (score,) = torch.autograd.grad(lp.sum(), z, create_graph=True, allow_unused=True)
        if score is None:
            score = torch.zeros_like(z)
        j = 0.0
        if variance_reduction:
            sq = 0.5 * _sum_event(score.pow(2), event_dim)
            j = sq if create_graph else sq.detach()
        for _ in range(num_projections):
            v = _projection(z, projection)
            vs = (v * score).sum()
            hvp = None
            if vs.requires_grad:
                (hvp,) = torch.autograd.grad(
                    vs, z, create_graph=create_graph, retain_graph=True, allow_unused=True
                )
            div = torch.zeros_like(lp) if hvp is None else _sum_event(v * hvp, event_dim)
            term = div
            if not variance_reduction:
                proj = _sum_event(v * score, event_dim)
                term = term + 0.5 * (proj.pow(2) if create_graph else proj.detach().pow(2))
            j = j + term / num_projections
        if not create_graph:
            j = j.detach()
    return j, lp


def sliced_score_matching(
    log_density,
    value,
    *,
    event_dim=1,
    num_projections=1,
    projection="rademacher",
    variance_reduction=True,
    create_graph=True,
):
    """Per-sample sliced score matching objective (Song et al., 2020) of an unnormalized density.

    With :math:`s(z) = \\nabla_z \\log\\tilde p(z) = -\\nabla_z E(z)` and projections :math:`v` with
    :math:`\\mathbb E[vv^\\top] = I` (Rademacher or standard Gaussian),

    .. math::

        J(z) = \\tfrac12\\lVert s(z)\\rVert^2 + v^\\top \\nabla_z\\big(v^\\top s(z)\\big)
        \\quad\\text{(variance reduced)}, \\qquad
        J(z) = \\tfrac12 (v^\\top s(z))^2 + v^\\top \\nabla_z\\big(v^\\top s(z)\\big),

    averaged over ``num_projections`` draws of :math:`v`. Both have expectation (over :math:`v`)
    :math:`\\tfrac12\\lVert\\nabla E\\rVert^2 - \\Delta E`, Hyvärinen's score-matching objective,
    whose expectation under the data equals the Fisher divergence up to a constant. (Algorithm 1
    of "Variational inference with unnormalized priors" writes the Hessian term with a ``+``
    sign; with :math:`s = -\\nabla E` the correct sign is the one above.)

    :param log_density: callable ``z -> log p~(z)``, shape ``z.shape[:-event_dim]`` (e.g. an
        ``EnergyDistribution``'s ``log_prob`` or ``lambda z: -energy(z)``).
    :param torch.Tensor value: points ``z``; they are detached (the objective is a function of
        the density's parameters only).
    :param int event_dim: number of trailing event dims of ``z``.
    :param bool create_graph: keep the result differentiable in the density's parameters.
    :returns: ``J`` per sample, shape ``value.shape[:-event_dim]``.
    """
    _check_projection(projection)
    num_projections = positive_int(num_projections, "num_projections")
    j, _ = _ssm(
        log_density,
        value,
        int(event_dim),
        num_projections,
        projection,
        bool(variance_reduction),
        create_graph,
    )
    return j


# ----------------------------------------------------------------------------------------------
# energy sites
# ----------------------------------------------------------------------------------------------
def is_unnormalized(fn):
    """Whether a distribution (or one it wraps: ``Independent``, ``expand``, ``mask``) declares
    ``is_normalized = False``, as :class:`~pyro_vsm.distributions.EnergyDistribution` does."""
    while fn is not None:
        if getattr(fn, "is_normalized", True) is False:
            return True
        fn = getattr(fn, "base_dist", None)
    return False


def _unwrap_energy_distribution(fn):
    while fn is not None:
        if getattr(fn, "is_normalized", True) is False:
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


def energy_sites(model_trace, caller="energy-prior loss"):
    """The latent sample sites of ``model_trace`` whose prior is unnormalized, as
    ``[(name, site)]``.

    :raises ValueError: when there is none (the loss needs an energy-based prior), or when an
        observed site is unnormalized (its missing normaliser would bias the decoder).
    """
    found, latents = [], []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        unnormalized = is_unnormalized(site["fn"])
        if site["is_observed"]:
            if unnormalized:
                raise ValueError(
                    f"{caller}: observed site '{name}' has an unnormalized distribution "
                    f"({type(site['fn']).__name__}); only latent prior sites may be unnormalized"
                )
            continue
        latents.append(name)
        if unnormalized:
            found.append((name, site))
    if not found:
        listed = ", ".join(repr(n) for n in latents) or "none"
        raise ValueError(
            f"{caller}: the model has no latent sample site with an energy-based (unnormalized) "
            f"prior, i.e. an EnergyDistribution with is_normalized=False (latent sites: "
            f"{listed}). This loss trains energy-based priors; use Trace_ELBO for models whose "
            "priors are normalised."
        )
    return found


# ----------------------------------------------------------------------------------------------
# objectives and their routing
# ----------------------------------------------------------------------------------------------
def _as_tensor(value, like):
    if torch.is_tensor(value):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


class _EnergyPriorELBO(GroupedLoss):
    r"""Shared machinery: particles, the energy sites, the ALB and the parameter groups."""

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
        """The params among ``candidates`` on which the prior log-densities depend."""
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
            ed = _unwrap_energy_distribution(site["fn"])
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
        alb = _as_tensor(alb, like)
        surrogate = _as_tensor(surrogate, like)
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

    #: whether the energy receives the ALB's gradient (only for the importance-weighted loss,
    #: whose eq. 7 gradient is the ALB's plus the self-normalised log Z term's)
    _alb_trains_prior = False

    def terms(self, model, guide, *args, **kwargs):
        r"""The loss and each group's objective value for the current parameters, as floats:
        ``{"loss": ..., "neg_alb": ..., ...}`` (names as in the class docstring). Takes no step.

        :param model: the model.
        :param guide: the guide.
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


def _weighted_sum(term, site, num_particles):
    return scale_and_mask(term, site["scale"], site["mask"]).sum() / num_particles


# ----------------------------------------------------------------------------------------------
# Algorithm 1: sliced score matching
# ----------------------------------------------------------------------------------------------
class SSMPriorLoss(_EnergyPriorELBO):
    """Energy-prior VAE training with sliced score matching (Algorithm 1).

    Per step, with :math:`z \\sim q_\\phi(z|x)`:

    * decoder and guide ascend the analogous lower bound :math:`\\mathcal L_{\\text{ALB}}` (the
      ELBO with :math:`-E_\\beta(z)` for :math:`\\log p(z)`; reparametrised, with Trace_ELBO's
      score-function terms for non-reparametrisable guide sites);
    * the energy descends the sliced score-matching objective
      :math:`J_\\beta = \\mathbb E_{q_\\phi(z|x)\\pi(x)}\\mathbb E_v[\\tfrac12\\lVert s\\rVert^2 +
      v^\\top\\nabla_z(v^\\top s)]`, :math:`s = -\\nabla_z E_\\beta(z)`, on **detached** posterior
      samples (the same ``z`` as the ALB), i.e. score matching of the prior to the aggregate
      posterior (:func:`sliced_score_matching`, ``create_graph=True``).

    The energy gets no ALB gradient and decoder/guide get no score-matching gradient. The value
    returned by ``svi.step`` and :meth:`loss` is :math:`-\\mathcal L_{\\text{ALB}} + J_\\beta`
    (both summed over the data plate); :meth:`terms` gives ``"neg_alb"`` and ``"ssm"``
    separately. Note that :math:`-\\mathcal L_{\\text{ALB}} = -\\mathcal L_{\\text{vae}} - \\log Z`
    is not a bound on :math:`-\\log p(x)`; evaluate the model with
    :func:`pyro_vsm.evaluation.energy_prior_log_likelihood`.

    :param int num_projections: projections :math:`v` per sample.
    :param str projection: ``"rademacher"`` or ``"gaussian"`` (both have :math:`\\mathbb E[vv^\\top]
        = I`).
    :param bool variance_reduction: use :math:`\\tfrac12\\lVert s\\rVert^2` (exact in :math:`v`)
        instead of :math:`\\tfrac12(v^\\top s)^2`.
    :param num_particles, max_plate_nesting, vectorize_particles, retain_graph: as for
        :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(
        self,
        num_projections=1,
        projection="rademacher",
        variance_reduction=True,
        **kwargs,
    ):
        _check_projection(projection)
        self.num_projections = positive_int(num_projections, "num_projections")
        self.projection = projection
        self.variance_reduction = bool(variance_reduction)
        super().__init__(**kwargs)

    def _prior_objectives(self, particles, ctx):
        total = 0.0
        for i, (_, _, sites) in enumerate(particles):
            lps = []
            for _, site in sites:
                j, lp = _ssm(
                    site["fn"].log_prob,
                    site["value"],
                    len(site["fn"].event_shape),
                    self.num_projections,
                    self.projection,
                    self.variance_reduction,
                    ctx.create_graph,
                )
                lps.append(lp)
                total = total + _weighted_sum(j, site, ctx.num_particles)
            if i == 0:
                ctx.log_densities = lps
        like = particles[0][2][0][1]["value"]
        total = _as_tensor(total, like)
        return [Objective("ssm", total, None)]


# ----------------------------------------------------------------------------------------------
# eq. 5: self-normalised importance-weighted log Z
# ----------------------------------------------------------------------------------------------
class ImportanceWeightedPriorLoss(_EnergyPriorELBO):
    """The importance-weighted estimate of the VLB, eq. 5 (Section 2.1).

    .. math::

        \\mathcal L(x) = \\mathbb E_{q}[\\log p_\\alpha(x|z) - E_\\beta(z) - \\log q(z|x)]
            - \\log \\frac1K\\sum_{k=1}^K e^{-E_\\beta(z_k) - \\log q(z_k|x)},
            \\qquad z_k \\sim q(z|x),

    with the ``K = num_samples`` guide samples per data point serving both terms. The second term
    estimates :math:`\\log Z_\\beta` by importance sampling with the guide as proposal; it is
    computed at detached samples and guide densities, so it trains only the energy, whose
    gradient is then eq. 7 (the ALB's :math:`-\\mathbb E_q[\\nabla E]` plus the self-normalised
    :math:`\\sum_k \\bar w_k \\nabla E(z_k)`); decoder and guide get the ALB's gradient.

    .. warning:: The paper shows that this estimator **fails** in practice (Sections 2.1 and
       4.1): the guide approximates the posterior :math:`p(z|x)`, not the prior, so its samples
       do not represent :math:`e^{-E}`; :math:`\\log \\hat Z` is strongly biased (low) and its
       gradient high-variance, and the prior converges to a poor solution. Prefer
       :class:`SSMPriorLoss` or :class:`AdversarialPriorLoss`.

    The value is :math:`-\\mathcal L` summed over the data plate (:meth:`terms`: ``"neg_alb"`` and
    ``"log_z"``, the per-point :math:`\\log\\hat Z` summed over the plate). For finite ``K``
    :math:`\\log\\hat Z` is biased low (Jensen), so the value is biased low too.

    :param int num_samples: ``K``, guide samples per data point (= ``num_particles``).
    :param num_particles: alias of ``num_samples`` (Pyro's name).
    :param max_plate_nesting, vectorize_particles, retain_graph: as for
        :class:`~pyro.infer.Trace_ELBO`.
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
        return self.num_particles

    def _log_weights(self, site, guide_site, create_graph):
        """``(log w, -E(z) at detached z)`` with the particle dim first."""
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
        total = _as_tensor(total, like)
        return [Objective("log_z", total, None)]


# ----------------------------------------------------------------------------------------------
# Algorithm 2: adversarial contrastive divergence with a variational prior
# ----------------------------------------------------------------------------------------------
class GaussianVariationalPrior(nn.Module):
    """A learnable full-covariance Gaussian :math:`q_\\zeta(z) = \\mathcal N(\\mu, LL^\\top)`: the
    simplest variational prior for :class:`AdversarialPriorLoss` (no extra dependency), with the
    interface any variational prior must have: ``rsample(sample_shape)``, ``log_prob(z)`` and
    ``event_shape``. Far less expressive than a flow (:func:`iaf_prior`).

    :param int dim: dimension of ``z``.
    :param float init_scale: initial standard deviation.
    """

    def __init__(self, dim, init_scale=1.0, *, dtype=None, device=None):
        super().__init__()
        self.dim = positive_int(dim, "dim")
        kw = dict(dtype=dtype, device=device)
        self.loc = nn.Parameter(torch.zeros(self.dim, **kw))
        self.raw_tril = nn.Parameter(torch.zeros(self.dim, self.dim, **kw))
        self.log_diag = nn.Parameter(torch.full((self.dim,), math.log(float(init_scale)), **kw))
        self.event_shape = torch.Size([self.dim])

    def distribution(self):
        tril = torch.tril(self.raw_tril, -1) + torch.diag_embed(self.log_diag.exp())
        return torch.distributions.MultivariateNormal(self.loc, scale_tril=tril)

    def rsample(self, sample_shape=()):
        return self.distribution().rsample(torch.Size(sample_shape))

    def log_prob(self, z):
        return self.distribution().log_prob(z)


def iaf_prior(dim, transforms=4, hidden_features=(64, 64), **kwargs):
    """An inverse autoregressive flow :math:`q_\\zeta(z)` (Kingma et al. 2016), the adversary of
    the paper's MNIST experiment, built with `zuko <https://zuko.readthedocs.io>`_ (the
    ``[flows]`` extra): a zuko ``MAF`` whose transform is inverted, so that sampling (with the
    log-density of the sample) takes one pass and only evaluating the log-density of an arbitrary
    point is sequential. Returns a zuko ``Flow`` (``flow()`` is the distribution).

    :param int dim: dimension of ``z``.
    :param int transforms: number of autoregressive layers.
    :param hidden_features: widths of each layer's masked MLP.
    :param kwargs: passed to ``zuko.flows.MAF``.
    :raises ImportError: when zuko is not installed.
    """
    try:
        import zuko
    except ImportError:
        raise ImportError(
            "iaf_prior needs zuko: pip install 'pyro-vsm[flows]' (or pass any module with "
            "rsample/log_prob, e.g. pyro_vsm.infer.energy_prior.GaussianVariationalPrior)"
        ) from None
    maf = zuko.flows.MAF(
        positive_int(dim, "dim"),
        transforms=positive_int(transforms, "transforms"),
        hidden_features=tuple(hidden_features),
        **kwargs,
    )
    return zuko.flows.Flow(maf.transform.inv, maf.base)


def _draw(prior, shape):
    """``(z, log q(z))`` with ``z`` reparametrised, from a variational prior module."""
    if callable(getattr(prior, "rsample", None)) and callable(getattr(prior, "log_prob", None)):
        d = prior
    else:
        d = prior()  # a zuko LazyDistribution: forward() is the distribution
    if callable(getattr(d, "rsample_and_log_prob", None)):
        from pyro.contrib.zuko import ZukoToPyro

        d = ZukoToPyro(d)  # draws with rsample_and_log_prob and caches the log-density
        z = d(shape)
        return z, d.log_prob(z)
    if not getattr(d, "has_rsample", True):
        raise ValueError("AdversarialPriorLoss: the variational prior must be reparametrisable")
    z = d.rsample(shape)
    return z, d.log_prob(z)


#: the key of a variational prior passed as one module (for the model's only energy site)
_SINGLE = "default"


def _module_key(site_name):
    return site_name.replace(".", "__")


class AdversarialPriorLoss(_EnergyPriorELBO):
    """Energy-prior VAE training with adversarial contrastive divergence (Algorithm 2).

    A variational prior :math:`q_\\zeta(z)` with a tractable density gives the lower bound
    :math:`\\log Z_\\beta \\ge \\mathbb E_{q_\\zeta}[-E_\\beta(z) - \\log q_\\zeta(z)]` (eq. 9).
    Per step, with :math:`z \\sim q_\\phi(z|x)` and :math:`z' \\sim q_\\zeta` (one :math:`z'` per
    posterior sample):

    * decoder and guide ascend the analogous lower bound, as in :class:`SSMPriorLoss`;
    * :math:`\\zeta` ascends :math:`\\mathbb E_{q_\\zeta}[-E_\\beta(z')] + H[q_\\zeta]`
      (reparametrised :math:`z'`);
    * the energy descends the contrastive divergence
      :math:`\\mathbb E_{q_\\phi(z|x)\\pi(x)}[E_\\beta(z)] - \\mathbb E_{q_\\zeta}[E_\\beta(z')]`
      (both samples detached): positive phase on the posterior, negative phase on the adversary.

    The three updates happen in the same ``svi.step`` (simultaneously, where Algorithm 2 is
    sequential within an iteration). The value is the negative of eq. 10,
    :math:`-\\mathcal L_{\\text{ALB}} + \\mathbb E_{q_\\zeta}[E_\\beta + \\log q_\\zeta]`, an estimate
    of :math:`-\\mathcal L_{\\text{vae}}` that is biased low (not a bound on :math:`-\\log p(x)`)
    by :math:`D_{KL}(q_\\zeta\\|p_\\beta)`; :meth:`terms` gives ``"neg_alb"``, ``"log_z"`` (the
    variational bound on :math:`\\log Z`, summed over the data plate) and ``"cd"``.

    **The variational prior.** ``variational_prior`` is

    * ``None`` (default): an IAF (:func:`iaf_prior`, needs zuko, the ``[flows]`` extra) is built
      for each energy site on the first call, with the site's dimension, dtype and device;
    * a zuko flow (any module whose call with no argument returns a distribution with
      ``rsample``/``rsample_and_log_prob``; zuko distributions are drawn through
      :class:`pyro.contrib.zuko.ZukoToPyro`);
    * any ``torch.nn.Module`` with ``rsample(sample_shape)`` and ``log_prob(z)``, e.g.
      :class:`GaussianVariationalPrior`;
    * a dict ``{site name: module}`` when the model has several energy sites.

    Under ``SVI`` the variational prior's parameters are registered in Pyro's param store with
    ``pyro.module(f"{name}_{site}", module)`` (so one optimizer steps all groups). For a plain
    torch optimizer, ``loss(model, guide)`` returns an ``ELBOModule`` whose ``parameters()``
    include the variational priors; call it once on data before building the optimizer when
    they are created lazily.

    :param variational_prior: see above.
    :param str name: prefix of the variational prior's Pyro param names.
    :param num_particles, max_plate_nesting, vectorize_particles, retain_graph: as for
        :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(self, variational_prior=None, *, name="variational_prior", **kwargs):
        super().__init__(**kwargs)
        self.name = str(name)
        if isinstance(variational_prior, dict):
            for site, module in variational_prior.items():
                self.owned_modules[_module_key(site)] = self._check_module(module)
        elif variational_prior is not None:  # one module for the (only) energy site
            self.owned_modules[_SINGLE] = self._check_module(variational_prior)

    @staticmethod
    def _check_module(module):
        if not isinstance(module, nn.Module):
            raise ValueError(
                "AdversarialPriorLoss: variational_prior must be a torch.nn.Module (a zuko flow, "
                "or a module with rsample/log_prob such as GaussianVariationalPrior), got "
                f"{type(module).__name__}"
            )
        return module

    def variational_prior(self, site_name):
        r"""The variational prior of an energy site (``None`` before it is created).

        :param str site_name: the energy site's name.
        """
        for key in (_SINGLE, _module_key(site_name)):
            if key in self.owned_modules:
                return self.owned_modules[key]
        return None

    def _prior_for(self, name, site, num_sites):
        if _SINGLE in self.owned_modules:
            if num_sites > 1:
                raise ValueError(
                    "AdversarialPriorLoss: the model has several energy sites; pass "
                    "variational_prior={site name: module}"
                )
            return self.owned_modules[_SINGLE]
        key = _module_key(name)
        if key not in self.owned_modules:
            event_shape = site["fn"].event_shape
            if len(event_shape) != 1:
                raise ValueError(
                    f"AdversarialPriorLoss: the default flow needs a vector site; site "
                    f"'{name}' has event_shape {tuple(event_shape)}: pass variational_prior"
                )
            like = site["value"]
            self.owned_modules[key] = iaf_prior(event_shape[0]).to(
                dtype=like.dtype, device=like.device
            )
        return self.owned_modules[key]

    def _prior_objectives(self, particles, ctx):
        cd, bound = 0.0, 0.0
        zeta = {}
        for i, (_, _, sites) in enumerate(particles):
            lps = []
            for name, site in sites:
                module = self._prior_for(name, site, len(sites))
                fn = site["fn"]
                event_dim = len(fn.event_shape)
                value = site["value"].detach()
                batch = value.shape[: value.dim() - event_dim]
                z_neg, log_q = _draw(module, batch)
                if z_neg.shape != value.shape:
                    raise ValueError(
                        f"AdversarialPriorLoss: the variational prior of site '{name}' drew "
                        f"shape {tuple(z_neg.shape)}; expected {tuple(value.shape)} (event_shape "
                        f"{tuple(fn.event_shape)})"
                    )
                lp_pos = fn.log_prob(value)  # -E at the posterior samples
                lp_neg = fn.log_prob(z_neg)  # -E at the adversary's samples
                lps.append(lp_pos)
                # ζ: minimise E_q'[E + log q']; β: minimise E_post[E] - E_q'[E]
                bound = bound + _weighted_sum(log_q - lp_neg, site, ctx.num_particles)
                cd = cd + _weighted_sum(lp_neg - lp_pos, site, ctx.num_particles)
                if i == 0:
                    zeta.update(self.owned_params(f"{self.name}_{name}", module))
            if i == 0:
                ctx.log_densities = lps
        like = particles[0][2][0][1]["value"]
        cd, bound = _as_tensor(cd, like), _as_tensor(bound, like)
        return [
            Objective("log_z", -bound.detach(), zeta, surrogate=bound),
            Objective("cd", cd, None, in_total=False),
        ]

    @property
    def variational_priors(self):
        r"""The variational priors built so far, keyed by site (``.`` replaced by ``__``), or
        under ``"default"`` when one module was passed for the only energy site."""
        return self.owned_modules

    def prepare(self, model, guide, *args, **kwargs):
        r"""Builds the default variational priors (one per energy site) without taking a step.

        :param model: the model.
        :param guide: the guide.
        """
        with torch.enable_grad(), poutine.block():
            self._objectives(model, guide, args, kwargs, phase=self.phase, create_graph=False)
