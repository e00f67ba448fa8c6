r"""Losses that train energies by minimum-velocity learning: :class:`MVLLoss` (density
estimation of unnormalized models of the data) and :class:`MVLPriorLoss` (energy-based VAE
priors)."""

import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled

from ..._checks import check_positive
from ...errors import ScoreObjectiveError
from ...ops.score_matching import sliced_score_matching
from ...ops.sites import latent_sites, observed_sites, unwrap_energy_distribution
from ...ops.sphere import check_on_sphere
from ..energy_prior import EnergyPriorLoss
from ..grouped import GroupedLoss, Objective, trace_params
from .estimators import cd1, dsm, langevin_mvl, spos_mvl, svgd_mvl
from .sphere import sphere_mvl

__all__ = ["ESTIMATORS", "MVLLoss", "MVLPriorLoss"]

#: the estimators ``MVLLoss`` and ``MVLPriorLoss`` accept
ESTIMATORS = ("langevin", "dsm", "cd1", "svgd", "spos", "ssm")


class _Estimator:
    r"""One configured estimator: ``(values to minimise, values to report)`` per data point."""

    def __init__(self, estimator, step_size, control_variate, alpha, manifold):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if manifold not in (None, "sphere"):
            raise ValueError(f"manifold must be None or 'sphere', got {manifold!r}")
        if manifold == "sphere" and estimator != "langevin":
            raise ValueError(
                f"manifold='sphere' supports estimator='langevin' (Riemannian MVL), got "
                f"{estimator!r}"
            )
        if not isinstance(control_variate, bool):
            raise ValueError(f"control_variate must be True or False, got {control_variate!r}")
        self.estimator = estimator
        self.step_size = check_positive(step_size, "step_size")
        self.control_variate = control_variate
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.manifold = manifold

    def __call__(self, energy, x):
        eps, cv = self.step_size, self.control_variate
        if self.estimator == "ssm":
            value = sliced_score_matching(lambda y: -energy(y), x, projection="gaussian")
            return value, value
        if self.estimator == "cd1":
            # the CD-1 surrogate has the right gradient but not the value of J: report SSM's
            surrogate = cd1(energy, x, eps, control_variate=cv)
            with torch.enable_grad():
                reported = sliced_score_matching(
                    lambda y: -energy(y), x, projection="gaussian", create_graph=False
                )
            return surrogate, reported.detach()
        if self.manifold == "sphere":
            value = sphere_mvl(energy, x, eps, control_variate=cv)
        elif self.estimator == "langevin":
            value = langevin_mvl(energy, x, eps, control_variate=cv)
        elif self.estimator == "dsm":
            value = dsm(energy, x, eps, control_variate=cv)
        elif self.estimator == "svgd":
            value = svgd_mvl(energy, x, eps)
        else:
            value = spos_mvl(energy, x, eps, self.alpha, control_variate=cv)
        return value, value


def _flat_values(name, site, manifold, validate):
    r"""The site's value as ``[B, d]`` (and its energy on that layout), with the checks."""
    fn, x = site["fn"], site["value"]
    event_dim = len(fn.event_shape)
    if event_dim != 1:
        raise ScoreObjectiveError(
            f"site '{name}': minimum-velocity estimators need vector-valued sites (event_shape "
            f"(d,)), got event_shape {tuple(fn.event_shape)}"
        )
    on_sphere = (
        fn.support is constraints.sphere
        or getattr(unwrap_energy_distribution(fn), "support", None) is constraints.sphere
    )
    if on_sphere and manifold != "sphere":
        raise ScoreObjectiveError(f"site '{name}' has support on the sphere: use manifold='sphere'")
    if manifold == "sphere" and not on_sphere:
        raise ScoreObjectiveError(
            f"site '{name}': manifold='sphere' needs EnergyDistribution(..., "
            "support=constraints.sphere)"
        )
    if validate:
        if not bool(torch.isfinite(x).all()):
            raise ScoreObjectiveError(f"site '{name}' has non-finite values (nan or inf)")
        if on_sphere:
            check_on_sphere(x.reshape(-1, x.shape[-1]), name=f"site '{name}'")
    shape = torch.broadcast_shapes(x.shape, fn.batch_shape + fn.event_shape)
    x = x.detach().expand(shape)
    # the site's potential E(x) - log b(x) works on any leading shape and does not validate the
    # moved points (they are the estimator's, not data)
    return x.reshape(-1, shape[-1]), unwrap_energy_distribution(fn).potential, shape[:-1]


class MVLLoss(GroupedLoss):
    r"""Density estimation of an unnormalized model by minimum-velocity learning.

    The model observes data through :class:`~pyro_vsm.distributions.EnergyDistribution` sites
    (:math:`\tilde q_\theta(x) = e^{-E_\theta(x)}`, possibly tilted by a normalised base
    :math:`b`: :math:`\tilde q_\theta(x) = b(x)e^{-E_\theta(x)}`) inside a ``pyro.plate``; it has
    no latent sites. ``svi.step`` minimises, summed over the data plate (scaled by plate
    subsampling like ``Trace_ELBO``) and averaged over ``num_particles`` draws of the noise, an
    estimate of Hyvärinen's objective

    .. math::

        J(x) = \tfrac12\lVert\nabla\log\tilde q_\theta(x)\rVert^2
            + \Delta\log\tilde q_\theta(x),

    applied to the site's full unnormalised log-density:

    * ``"langevin"`` (default) -- one Langevin step towards :math:`q^{1/2}` with the control
      variate, :func:`~pyro_vsm.infer.mvl.langevin_mvl` (MVL, Section 3.2 of [1]); with
      ``manifold="sphere"`` the Riemannian version :func:`~pyro_vsm.infer.mvl.sphere_mvl` for
      sites on :math:`S^n` (``EnergyDistribution(..., support=constraints.sphere)``);
    * ``"dsm"`` -- variance-reduced denoising score matching,
      :func:`~pyro_vsm.infer.mvl.dsm`;
    * ``"cd1"`` -- the VR-CD-1 surrogate :func:`~pyro_vsm.infer.mvl.cd1`, whose gradient tends
      to :math:`\nabla_\theta J` but whose value is not :math:`J`: ``svi.step`` and
      ``svi.evaluate_loss`` report the sliced score-matching value of the current energy
      instead;
    * ``"svgd"``, ``"spos"`` -- the SVGD and SPOS objectives of Appendix B,
      :func:`~pyro_vsm.infer.mvl.svgd_mvl` (:math:`\tfrac12\mathrm{KSD}^2` up to a data-only
      term) and :func:`~pyro_vsm.infer.mvl.spos_mvl` (plus :math:`\alpha J`); SVGD couples
      the points of a batch, so each particle is one estimate over the whole batch;
    * ``"ssm"`` -- sliced score matching (Gaussian projections, variance-reduced) on the same
      code path: the baseline the paper compares with.

    The estimates of ``"langevin"``, ``"dsm"`` and ``"ssm"`` are unbiased for :math:`J` as
    :math:`\epsilon \to 0` (bias :math:`O(\epsilon)`), so values compare across estimators.

    :param float step_size: :math:`\epsilon > 0`.
    :param str estimator: one of :data:`ESTIMATORS`.
    :param bool control_variate: use the control variate :math:`\sqrt{2\epsilon}\,\xi\cdot\nabla E`.
    :param float alpha: the weight of the Langevin part of ``"spos"``.
    :param manifold: ``None`` (Euclidean) or ``"sphere"``.
    :param int num_particles: draws of the noise per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: draw the particles' noise in one batch (``"svgd"`` and
        ``"spos"`` always loop: their estimates couple the points of a batch).
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
        Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
    """

    def __init__(
        self,
        step_size=1e-3,
        estimator="langevin",
        control_variate=True,
        alpha=1.0,
        manifold=None,
        **kwargs,
    ):
        self._estimate = _Estimator(estimator, step_size, control_variate, alpha, manifold)
        super().__init__(**kwargs)

    @property
    def estimator(self):
        r"""The estimator's name."""
        return self._estimate.estimator

    def _model_trace(self, model, args, kwargs):
        with torch.enable_grad():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        for name, _ in latent_sites(trace):
            raise ScoreObjectiveError(
                f"{type(self).__name__}: the model has latent site '{name}'; MVLLoss fits "
                "unnormalized models of the data (use MVLPriorLoss for energy-based VAE priors)"
            )
        sites = observed_sites(trace)
        if not sites:
            raise ScoreObjectiveError(
                f"{type(self).__name__}: the model has no observed site; observe the data with "
                "pyro.sample(name, EnergyDistribution(energy), obs=x)"
            )
        for name, site in sites:
            if unwrap_energy_distribution(site["fn"]) is None:
                raise ScoreObjectiveError(
                    f"{type(self).__name__}: observed site '{name}' is a "
                    f"{type(site['fn']).__name__}, not an EnergyDistribution; MVLLoss fits "
                    "unnormalized models"
                )
        return trace, sites

    def _site_terms(self, name, site, validate):
        x, energy, batch_shape = _flat_values(name, site, self._estimate.manifold, validate)
        s = self.num_particles
        batched = self.vectorize_particles and s > 1 and self.estimator not in ("svgd", "spos")
        if batched:  # one batch of S copies of the data: one noise draw per copy
            surrogate, reported = self._estimate(energy, x.repeat(s, 1))
            surrogate = surrogate.reshape(s, -1).mean(0)
            reported = reported.reshape(s, -1).mean(0)
        else:
            pairs = [self._estimate(energy, x) for _ in range(s)]
            surrogate = sum(p[0] for p in pairs) / s
            reported = sum(p[1] for p in pairs) / s

        def total(values):
            return scale_and_mask(values.reshape(batch_shape), site["scale"], site["mask"]).sum()

        return total(surrogate), total(reported)

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        trace, sites = self._model_trace(model, args, kwargs)
        validate = is_validation_enabled()
        surrogate, reported, terms = 0.0, 0.0, {}
        # energies that are PyroModules emit their param sites when evaluated: capture them
        with poutine.trace(param_only=True) as capture:
            for name, site in sites:
                s, r = self._site_terms(name, site, validate)
                surrogate, reported = surrogate + s, reported + r
                terms[name] = r.detach()
        params = trace_params(trace, capture.trace)
        return [Objective("energy", reported, params, surrogate=surrogate, sites=terms)]


class MVLPriorLoss(EnergyPriorLoss):
    r"""Energy-prior VAE training with the energy fitted by minimum-velocity learning.

    The sibling of :class:`~pyro_vsm.infer.SSMPriorLoss`, with the same routing: decoder and
    guide ascend the analogous lower bound (the ELBO with :math:`-E_\beta(z)` for
    :math:`\log p(z)`), and the energy descends the minimum-velocity estimate of Hyvärinen's
    objective on **detached** posterior samples, i.e. score matching of the prior to the
    aggregate posterior without second derivatives. The value is :math:`-\mathcal L_{\text{ALB}}`
    plus that estimate (``"cd1"``: plus the sliced score-matching value), both summed over the
    data plate; :attr:`last_terms` holds ``"neg_alb"`` and ``"mvl"``.

    :param float step_size: :math:`\epsilon > 0`.
    :param str estimator: one of :data:`ESTIMATORS` (``"svgd"``/``"spos"`` couple the samples
        of a batch).
    :param bool control_variate: use the control variate.
    :param float alpha: the weight of the Langevin part of ``"spos"``.
    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
        Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
    """

    def __init__(
        self, step_size=1e-3, estimator="langevin", control_variate=True, alpha=1.0, **kwargs
    ):
        self._estimate = _Estimator(estimator, step_size, control_variate, alpha, None)
        super().__init__(**kwargs)

    def _prior_objectives(self, particles, ctx):
        surrogate, reported = 0.0, 0.0
        for i, (_, _, sites) in enumerate(particles):
            lps = []
            for name, site in sites:
                x, energy, batch_shape = _flat_values(name, site, None, False)
                lps.append(site["fn"].log_prob(site["value"].detach()))
                s, r = self._estimate(energy, x)
                surrogate = surrogate + self._site_sum(
                    s.reshape(batch_shape), site, ctx.num_particles
                )
                reported = reported + self._site_sum(
                    r.reshape(batch_shape), site, ctx.num_particles
                )
            if i == 0:
                ctx.log_densities = lps
        like = particles[0][2][0][1]["value"]
        surrogate = self._tensor_like(surrogate, like)
        reported = self._tensor_like(reported, like)
        return [Objective("mvl", reported, None, surrogate=surrogate)]
