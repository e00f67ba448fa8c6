r"""Auto-encoders with implicit encoders whose entropy gradient comes from an energy trained by
minimum-velocity learning (Wang et al. [1], Section 4.2, eq. 19 and Appendix D).

An implicit encoder :math:`z = f_\phi(x, \varepsilon)` (e.g. :class:`~pyro_vsm.guides.ImplicitEncoder`)
has no tractable density, so neither the ELBO's :math:`-\mathbb E_q\log q(z|x)` nor the WAE's
entropy of the aggregate posterior can be evaluated. Their gradients only need the score of
:math:`q`: for a pushforward :math:`z = f(\varepsilon; \phi)` of a fixed noise,

.. math::

    \nabla_\phi H[q] = -\mathbb E_\varepsilon\big[\nabla_z\log q(z)\,\nabla_\phi f(\varepsilon;
        \phi)\big] \qquad (\text{eq. 19}),

because :math:`\mathbb E_q[\nabla_\phi\log q_\phi(z)] = 0` at fixed :math:`z`. On :math:`S^n`
the same holds with densities relative to the surface measure (Appendix D); autograd through the
normalisation :math:`z = f/\lVert f\rVert` projects :math:`\nabla_z` onto the tangent space. The
score is estimated by an energy :math:`E_\psi` with :math:`q \propto e^{-E_\psi}`, fitted to the
encoder's **detached** samples by (Riemannian) minimum-velocity learning
(:func:`~pyro_vsm.infer.mvl.langevin_mvl`, :func:`~pyro_vsm.infer.mvl.sphere_mvl`) with an L2
penalty :math:`\lambda_E E_\psi^2` on the energy's values; :math:`\log q` is then replaced by
:math:`-E_\psi` with :math:`\psi` frozen, whose :math:`\phi`-gradient is eq. 19's.

* :class:`ImplicitELBO`: the VAE, with a conditional energy :math:`E_\psi(z, x)` for
  :math:`-\log q(z|x)`;
* :class:`ImplicitWAELoss`: the WAE, reconstruction :math:`+\ \lambda\,\mathrm{KL}[q(z)\|p(z)]`
  with a marginal energy :math:`E_\psi(z)` for the aggregate posterior
  :math:`q(z) = \mathbb E_{p(x)}q(z|x)`.

**Groups and updates.** Two parameter groups: the *autoencoder* (the model's and the guide's
parameters) and the *energy* (a module the loss owns). With ``updates="simultaneous"``
(default) one ``svi.step`` moves both, each from its own objective, on one draw of the encoder:
one guide and model pass per iteration and one ``svi.step`` per iteration of the paper's
algorithm. ``updates="alternating"`` takes an autoencoder step, then an energy step on a fresh
draw of the updated encoder (the reference code's order; two ``svi.step`` calls per iteration).
Every step reports both objectives' values.

**The energy** is owned by the loss (:attr:`~pyro_vsm.infer.GroupedLoss.owned_modules`): under
``SVI`` it is registered in Pyro's param store as ``prefix + "conditional_energy"`` (or
``"marginal_energy"``), so ``pyro.optim`` steps it and per-parameter arguments can target it;
:meth:`~pyro_vsm.infer.GroupedLoss.state_dict` and checkpoints save it. ``energy=None`` builds
:class:`~pyro_vsm.distributions.ConditionalQuadraticFormEnergy` with the reference's networks
(two hidden layers of 256 tanh units, input scale :math:`\sqrt{n+1}` on :math:`S^n`) on the first
call; call :meth:`~pyro_vsm.infer.GroupedLoss.prepare` before building a torch optimizer.

**Scales.** The energy descends :math:`\hat J_\epsilon + \lambda_E E_\psi(\tilde z)^2`, with
:math:`\hat J` on its own scale; the reference code's :math:`\epsilon\hat J + 10^{-4}(E(\tilde
z)^2 + E(\tilde z^-)^2)` (VAE, :math:`\epsilon = 10^{-3}`) and :math:`10^{-3}\hat J +
10^{-5}(\ldots)` (WAE) give the defaults ``energy_penalty`` 0.2 and 0.02.

All terms are summed over the data plate with its scale (minibatches with ``num_data``) and
averaged over particles, like :class:`~pyro.infer.Trace_ELBO`. The guide must have one latent
site, reparametrised (a ``Delta`` for an implicit encoder; an explicit guide's density is
ignored, and the score-function correction of a rejection sampler such as
:class:`~pyro_vsm.distributions.VonMisesFisher`'s is not applied).

References:

[1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
    Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
"""

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from torch import nn

from .._checks import check_positive
from ..distributions.conditional_energy import ConditionalQuadraticFormEnergy
from ..ops.sites import unwrap_energy_distribution
from ..ops.sphere import check_on_sphere
from .grouped import GroupedLoss, Objective, split_params
from .mvl.loss import _Estimator
from .schedules import CyclicSchedule, SinglePhase

__all__ = ["ImplicitELBO", "ImplicitWAELoss", "UPDATES"]

#: the update orders of the losses here
UPDATES = ("simultaneous", "alternating")
AUTOENCODER, ENERGY = "autoencoder", "energy"


def _latent_site(name, trace, what):
    latents = [
        (n, s) for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]
    ]
    if len(latents) != 1:
        raise ValueError(
            f"{name}: the {what} must have exactly one latent site (the code z), got "
            f"{[n for n, _ in latents]}"
        )
    return latents[0]


class _Draw:
    r"""One particle: the code, its plate scale and mask, and the model's terms."""

    def __init__(self, loss, model_trace, guide_trace, args, kwargs):
        name = type(loss).__name__
        site_name, site = _latent_site(name, guide_trace, "guide")
        if not getattr(site["fn"], "has_rsample", False):
            raise ValueError(
                f"{name}: guide site '{site_name}' ({type(site['fn']).__name__}) is not "
                "reparametrised; the encoder is trained through its samples (use a Delta site, "
                "e.g. pyro_vsm.guides.ImplicitEncoder)"
            )
        prior = model_trace.nodes.get(site_name)
        if prior is None or prior["type"] != "sample" or prior["is_observed"]:
            raise ValueError(f"{name}: the model has no latent site '{site_name}' (the guide's)")
        z = site["value"]
        if len(site["fn"].event_shape) != 1 or z.dim() < 2:
            raise ValueError(
                f"{name}: guide site '{site_name}' must be vector-valued with a batch dim (event "
                f"shape (d,) inside a data plate), got value shape {tuple(z.shape)}"
            )
        fn = prior["fn"]
        on_sphere = (
            fn.support is constraints.sphere
            or getattr(unwrap_energy_distribution(fn), "support", None) is constraints.sphere
        )
        if on_sphere and loss.manifold != "sphere":
            raise ValueError(
                f"{name}: the prior of site '{site_name}' lives on the sphere; use "
                "manifold='sphere'"
            )
        if loss.manifold == "sphere" and not on_sphere:
            raise ValueError(
                f"{name}: manifold='sphere' needs a prior on the sphere at site '{site_name}' "
                f"(e.g. HypersphericalUniform), got {type(fn).__name__}"
            )
        if on_sphere and is_validation_enabled():
            check_on_sphere(z.detach().reshape(-1, z.shape[-1]), name=f"guide site '{site_name}'")
        self.site_name, self.z = site_name, z
        self.scale, self.mask = site["scale"], site["mask"]
        self.batch_shape = z.shape[:-1]
        self.log_lik = sum(
            s["log_prob_sum"]
            for s in model_trace.nodes.values()
            if s["type"] == "sample" and s["is_observed"]
        )
        self.log_prior = prior["log_prob_sum"]
        self.cond = None
        if loss._conditional:
            self.cond = loss._conditioning(args, self.batch_shape)

    def plate_sum(self, values):
        r"""``values`` (batch shape) summed over the plates with the site's scale and mask."""
        return scale_and_mask(values, self.scale, self.mask).sum()


class _EntropyEnergyLoss(GroupedLoss):
    r"""The shared machinery of :class:`ImplicitELBO` and :class:`ImplicitWAELoss`."""

    _conditional = True
    _energy_key = "conditional_energy"
    _objective_name = "neg_elbo"

    def __init__(
        self,
        energy=None,
        *,
        manifold=None,
        step_size=1e-3,
        estimator="langevin",
        control_variate=True,
        energy_penalty=0.2,
        entropy_weight=1.0,
        updates="simultaneous",
        prefix="",
        **kwargs,
    ):
        name = type(self).__name__
        self._estimate = _Estimator(estimator, step_size, control_variate, 1.0, manifold)
        if estimator in ("svgd", "spos", "cd1"):
            raise ValueError(
                f"{name}: estimator must be 'langevin', 'dsm' or 'ssm' (per-sample estimates of "
                f"J), got {estimator!r}"
            )
        self.energy_penalty = check_positive(energy_penalty, "energy_penalty", allow_zero=True)
        self.entropy_weight = check_positive(entropy_weight, "entropy_weight")
        if updates not in UPDATES:
            raise ValueError(f"{name}: updates must be one of {UPDATES}, got {updates!r}")
        if not isinstance(prefix, str):
            raise ValueError(f"{name}: prefix must be a str, got {prefix!r}")
        self.updates, self.prefix = updates, prefix
        if updates == "simultaneous":
            schedule = SinglePhase("joint")
        else:
            schedule = CyclicSchedule([(AUTOENCODER, 1), (ENERGY, 1)])
        super().__init__(schedule=schedule, **kwargs)
        if energy is not None:
            if not isinstance(energy, nn.Module):
                raise ValueError(
                    f"{name}: energy must be a torch.nn.Module (e.g. "
                    f"ConditionalQuadraticFormEnergy), got {type(energy).__name__}"
                )
            self.owned_modules[self._energy_key] = energy

    @property
    def manifold(self):
        r"""``None`` (Euclidean) or ``"sphere"``."""
        return self._estimate.manifold

    @property
    def energy(self):
        r"""The energy :math:`E_\psi` (``None`` before a default one is built)."""
        return (
            self.owned_modules[self._energy_key] if self._energy_key in self.owned_modules else None
        )

    # -- pieces ----------------------------------------------------------------------------------
    def _conditioning(self, args, batch_shape):
        r"""The guide's first argument, one flattened row per data point, expanded to the code's
        batch shape (the data plate at the rightmost batch dim)."""
        name = type(self).__name__
        x = args[0] if args else None
        if not torch.is_tensor(x) or x.dim() < 1 or not x.is_floating_point():
            raise ValueError(
                f"{name}: the conditional energy E(z, x) reads x from the first positional "
                "argument of model and guide, which must be a floating-point tensor of data "
                f"points, got {type(x).__name__ if not torch.is_tensor(x) else tuple(x.shape)}"
            )
        if batch_shape[-1] != x.shape[0]:
            raise ValueError(
                f"{name}: the guide's code has batch shape {tuple(batch_shape)}; the conditional "
                f"energy needs the data plate over the {x.shape[0]} rows of x at dim -1"
            )
        flat = x.reshape(x.shape[0], -1)
        return flat.expand(batch_shape + flat.shape[-1:])

    def _energy_for(self, draw):
        if self._energy_key not in self.owned_modules:
            z = draw.z
            d = z.shape[-1]
            scale = math.sqrt(d) if self.manifold == "sphere" else 1.0
            cond = draw.cond.shape[-1] if self._conditional else 0
            self.owned_modules[self._energy_key] = ConditionalQuadraticFormEnergy(
                d, cond, input_scale=scale, dtype=z.dtype, device=z.device
            )
        return self.owned_modules[self._energy_key]

    def _energy_values(self, energy, z, draw):
        return energy(z, draw.cond) if self._conditional else energy(z)

    def _autoencoder_objective(self, draws, energy, params):
        s = self.num_particles
        log_lik, log_prior, entropy = 0.0, 0.0, 0.0
        for draw in draws:
            e = self._energy_values(energy, draw.z, draw)  # psi is frozen by the routing
            log_lik = log_lik + draw.log_lik / s
            log_prior = log_prior + draw.log_prior / s
            entropy = entropy + draw.plate_sum(e) / s
        surrogate = -(log_lik + self.entropy_weight * (log_prior + entropy))
        return Objective(
            self._objective_name,
            surrogate.detach(),
            params,
            surrogate=surrogate,
            sites=lambda: {"log_likelihood": log_lik, draws[0].site_name: log_prior},
            parts={"reconstruction": -log_lik.detach(), "entropy_energy": entropy.detach()},
        )

    def _energy_objective(self, draws, energy, params):
        s = self.num_particles
        surrogate, reported, penalty = 0.0, 0.0, 0.0
        for draw in draws:
            z = draw.z.detach()
            flat = z.reshape(-1, z.shape[-1])
            cond = None if draw.cond is None else draw.cond.reshape(flat.shape[0], -1)

            def fn(y, cond=cond):
                return energy(y, cond) if cond is not None else energy(y)

            j_surrogate, j_reported = self._estimate(fn, flat)
            pen = self.energy_penalty * fn(flat).pow(2) if self.energy_penalty else 0.0
            shape = draw.batch_shape
            surrogate = surrogate + draw.plate_sum((j_surrogate + pen).reshape(shape)) / s
            reported = reported + draw.plate_sum((j_reported + pen).reshape(shape)) / s
            if self.energy_penalty:
                penalty = penalty + draw.plate_sum(pen.reshape(shape)) / s
        penalty = torch.as_tensor(penalty, dtype=reported.dtype, device=reported.device)
        return Objective(
            ENERGY,
            reported.detach(),
            params,
            surrogate=surrogate,
            parts={"score_matching": (reported - penalty).detach(), "energy_penalty": penalty},
        )

    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        traces = list(self._get_traces(model, guide, args, kwargs))
        draws = [_Draw(self, m, g, args, kwargs) for m, g in traces]
        energy = self._energy_for(draws[0])
        # both values in every phase (so every step reports the same quantity); the inactive
        # group's objective trains nothing
        active = (AUTOENCODER, ENERGY) if phase == "joint" else (phase,)
        params = {}
        if AUTOENCODER in active:
            model_params, guide_params = split_params(*zip(*traces, strict=True))
            params = {**model_params, **guide_params}
        objectives = [self._autoencoder_objective(draws, energy, params)]
        params = {}
        if ENERGY in active:
            params = self.owned_params(self.prefix + self._energy_key, energy)
        objectives.append(self._energy_objective(draws, energy, params))
        return objectives

    def prepare(self, model, guide, *args, **kwargs):
        r"""Builds the default energy (when none was given) without taking a step.

        :param model: the model.
        :param guide: the guide.
        :param args: positional arguments of the model and guide.
        :param kwargs: keyword arguments of the model and guide.
        """
        if self.energy is None:
            with torch.enable_grad():
                traces = list(self._get_traces(model, guide, args, kwargs))
                self._energy_for(_Draw(self, *traces[0], args, kwargs))


class ImplicitELBO(_EntropyEnergyLoss):
    r"""The ELBO of a VAE with an implicit encoder, its entropy gradient from a conditional energy
    trained by minimum-velocity learning (Section 4.2 of [1]; the module docstring has the
    details).

    Per step, with :math:`z = f_\phi(x, \varepsilon)` from the guide and :math:`\tilde z` the
    same codes detached:

    * model and guide descend the negative ELBO with :math:`\log q(z|x)` replaced by
      :math:`-E_\psi(z, x)` and :math:`\psi` frozen,

      .. math::

          -\tilde{\mathcal L} = -\textstyle\sum_n \big[\log p_\theta(x_n|z_n) + \log p(z_n)
              + E_\psi(z_n, x_n)\big],

      whose :math:`\phi`-gradient is eq. 19's estimate of the ELBO's;
    * the conditional energy :math:`E_\psi(z, x) = \langle h_\psi([z, x]), z\rangle` descends
      :math:`\sum_n \hat J_\epsilon(\tilde z_n; x_n) + \lambda_E E_\psi(\tilde z_n, x_n)^2`,
      (Riemannian) minimum-velocity score matching of :math:`e^{-E_\psi(\cdot, x)}` to
      :math:`q(z|x)`: :func:`~pyro_vsm.infer.mvl.sphere_mvl` with ``manifold="sphere"``,
      :func:`~pyro_vsm.infer.mvl.langevin_mvl` otherwise (or ``estimator="dsm"``/``"ssm"``).

    **Values.** ``svi.step`` and ``svi.evaluate_loss`` return :math:`-\tilde{\mathcal L}` plus
    the energy's objective. :math:`-\tilde{\mathcal L}` is **not a bound** on
    :math:`-\log p(x)`: it drops :math:`\log Z_\psi(x) = \log\int e^{-E_\psi(z, x)}dz`, which
    the energy is free to shift. Evaluate the model with
    :func:`~pyro_vsm.evaluation.ais_log_likelihood` (it handles sphere latents). :attr:`last_terms`
    holds ``"neg_elbo"`` (with ``"reconstruction"`` and ``"entropy_energy"``, the sum of
    :math:`E_\psi`) and ``"energy"`` (with ``"score_matching"`` and ``"energy_penalty"``).

    The conditional energy reads :math:`x` from the first positional argument of model and
    guide (``model(x, num_data=None)``), one flattened row per data point.

    :param torch.nn.Module energy: :math:`E_\psi`, called as ``energy(z, x)`` with ``z`` of shape
        ``(M, d)`` and ``x`` of shape ``(M, D)``, returning ``(M,)``; ``None`` builds the
        reference's :class:`~pyro_vsm.distributions.ConditionalQuadraticFormEnergy`.
    :param manifold: ``None`` (Euclidean latents) or ``"sphere"``.
    :param float step_size: :math:`\epsilon > 0` of the MVL estimator (the paper's
        :math:`10^{-3}`).
    :param str estimator: ``"langevin"`` (MVL), ``"dsm"`` or ``"ssm"`` (Euclidean only).
    :param bool control_variate: use the estimator's control variate.
    :param float energy_penalty: :math:`\lambda_E \ge 0`.
    :param str updates: ``"simultaneous"`` or ``"alternating"``.
    :param str prefix: prefix of the energy's name in Pyro's param store.
    :param int num_particles: codes per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
        Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)
    """

    def __init__(self, energy=None, manifold=None, step_size=1e-3, *, energy_penalty=0.2, **kwargs):
        super().__init__(
            energy, manifold=manifold, step_size=step_size, energy_penalty=energy_penalty, **kwargs
        )


class ImplicitWAELoss(_EntropyEnergyLoss):
    r"""A Wasserstein auto-encoder whose divergence is :math:`\mathrm{KL}[q(z)\|p(z)]`, with the
    entropy of the aggregate posterior from a marginal energy trained by minimum-velocity learning
    (Sections 4.2 and 6.2.2 of [1]; the module docstring has the details).

    Per step, with codes :math:`z_n` from the encoder (deterministic with
    :class:`~pyro_vsm.guides.ImplicitEncoder` and ``noise_dim=0``, as in [1]):

    * model (decoder) and guide (encoder) descend

      .. math::

          \textstyle\sum_n c(x_n, z_n) + \lambda\sum_n\big[-\log p(z_n) - E_\psi(z_n)\big],
          \qquad c(x, z) = -\log p_\theta(x|z),

      the reconstruction cost being the model's own negative log-likelihood at its observed
      sites (a Bernoulli decoder gives the cross-entropy of [1], a Gaussian one the squared
      error), and :math:`-\log p - E_\psi` the per-point estimate of
      :math:`\mathrm{KL}[q(z)\|p(z)]` up to :math:`\log Z_\psi` (:math:`\psi` frozen);
    * the marginal energy :math:`E_\psi(z) = \langle h_\psi(z), z\rangle` descends
      :math:`\sum_n \hat J_\epsilon(\tilde z_n) + \lambda_E E_\psi(\tilde z_n)^2` on the detached
      codes: score matching to the aggregate posterior.

    **Values.** ``svi.step`` and ``svi.evaluate_loss`` return the WAE objective (without
    :math:`\log Z_\psi`, so the KL part is not a divergence value) plus the energy's objective;
    :attr:`last_terms` holds ``"wae"`` (with ``"reconstruction"`` and ``"entropy_energy"``) and
    ``"energy"`` (with ``"score_matching"`` and ``"energy_penalty"``).

    :param torch.nn.Module energy: :math:`E_\psi`, called as ``energy(z)`` with ``z`` of shape
        ``(M, d)``, returning ``(M,)``; ``None`` builds the reference's
        :class:`~pyro_vsm.distributions.ConditionalQuadraticFormEnergy` with ``cond_dim=0``.
    :param manifold: ``None`` (Euclidean latents) or ``"sphere"``.
    :param float step_size: :math:`\epsilon > 0` of the MVL estimator.
    :param float wae_lambda: :math:`\lambda > 0` (the paper's 10).
    :param str estimator: ``"langevin"`` (MVL), ``"dsm"`` or ``"ssm"`` (Euclidean only).
    :param bool control_variate: use the estimator's control variate.
    :param float energy_penalty: :math:`\lambda_E \ge 0`.
    :param str updates: ``"simultaneous"`` or ``"alternating"``.
    :param str prefix: prefix of the energy's name in Pyro's param store.
    :param int num_particles: codes per data point.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `A Wasserstein Minimum Velocity Approach to Learning Unnormalized Models`,
        Ziyu Wang, Shuyu Cheng, Yueru Li, Jun Zhu, Bo Zhang (2020)

    [2] `Wasserstein Auto-Encoders`,
        Ilya Tolstikhin, Olivier Bousquet, Sylvain Gelly, Bernhard Schölkopf (2018)
    """

    _conditional = False
    _energy_key = "marginal_energy"
    _objective_name = "wae"

    def __init__(
        self,
        energy=None,
        manifold=None,
        step_size=1e-3,
        wae_lambda=10.0,
        *,
        energy_penalty=0.02,
        **kwargs,
    ):
        super().__init__(
            energy,
            manifold=manifold,
            step_size=step_size,
            energy_penalty=energy_penalty,
            entropy_weight=check_positive(wae_lambda, "wae_lambda"),
            **kwargs,
        )

    @property
    def wae_lambda(self):
        r""":math:`\lambda`, the weight of the divergence."""
        return self.entropy_weight
