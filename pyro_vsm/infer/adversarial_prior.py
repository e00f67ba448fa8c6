r"""Energy-prior VAE training with adversarial contrastive divergence (Algorithm 2 of
"Variational Inference with Unnormalized Priors"; see :class:`AdversarialPriorLoss`)."""

import torch
from pyro import poutine
from torch import nn

from ..guides.variational_prior import draw_with_log_prob, iaf_prior
from .energy_prior import EnergyPriorLoss
from .grouped import Objective

__all__ = ["AdversarialPriorLoss"]


#: the key of a variational prior passed as one module (for the model's only energy site)
_SINGLE = "default"


def _module_key(site_name):
    return site_name.replace(".", "__")


class AdversarialPriorLoss(EnergyPriorLoss):
    r"""Energy-prior VAE training with adversarial contrastive divergence (Algorithm 2 of [1]).

    A variational prior :math:`q_\zeta(z)` with a tractable density gives the lower bound
    :math:`\log Z_\beta \ge \mathbb E_{q_\zeta}[-E_\beta(z) - \log q_\zeta(z)]` (eq. 9).
    Per step, with :math:`z \sim q_\phi(z|x)` and :math:`z' \sim q_\zeta` (one :math:`z'` per
    posterior sample):

    * decoder and guide ascend the analogous lower bound, as in
      :class:`~pyro_vsm.infer.energy_prior.SSMPriorLoss`;
    * :math:`\zeta` ascends :math:`\mathbb E_{q_\zeta}[-E_\beta(z')] + H[q_\zeta]`
      (reparametrised :math:`z'`);
    * the energy descends the contrastive divergence
      :math:`\mathbb E_{q_\phi(z|x)\pi(x)}[E_\beta(z)] - \mathbb E_{q_\zeta}[E_\beta(z')]`
      (both samples detached): positive phase on the posterior, negative phase on the adversary.

    The three updates happen in the same ``svi.step`` (simultaneously, where Algorithm 2 is
    sequential within an iteration). The value is the negative of eq. 10,
    :math:`-\mathcal L_{\text{ALB}} + \mathbb E_{q_\zeta}[E_\beta + \log q_\zeta]`, an estimate
    of :math:`-\mathcal L_{\text{vae}}` that is biased low (not a bound on :math:`-\log p(x)`)
    by :math:`D_{KL}(q_\zeta\|p_\beta)`; :meth:`terms` gives ``"neg_alb"``, ``"log_z"`` (the
    variational bound on :math:`\log Z`, summed over the data plate) and ``"cd"``.

    **The variational prior.** ``variational_prior`` is

    * ``None`` (default): an IAF (:func:`~pyro_vsm.guides.variational_prior.iaf_prior`, needs
      zuko, the ``[flows]`` extra) is built for each energy site on the first call, with the
      site's dimension, dtype and device;
    * a zuko flow (any module whose call with no argument returns a distribution with
      ``rsample``/``rsample_and_log_prob``; zuko distributions are drawn through
      :class:`pyro.contrib.zuko.ZukoToPyro`);
    * any ``torch.nn.Module`` with ``rsample(sample_shape)`` and ``log_prob(z)``, e.g.
      :class:`~pyro_vsm.guides.GaussianVariationalPrior`;
    * a dict ``{site name: module}`` when the model has several energy sites.

    Under ``SVI`` the variational prior's parameters are registered in Pyro's param store with
    ``pyro.module(f"{name}_{site}", module)`` (so one optimizer steps all groups). For a plain
    torch optimizer, ``loss(model, guide)`` returns an ``ELBOModule`` whose ``parameters()``
    include the variational priors; call it once on data before building the optimizer when
    they are created lazily.

    :param variational_prior: see above.
    :param str name: prefix of the variational prior's Pyro param names.
    :param int num_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param max_plate_nesting: as for :class:`~pyro.infer.Trace_ELBO`.
    :param bool vectorize_particles: as for :class:`~pyro.infer.Trace_ELBO`.
    :param retain_graph: as for :class:`~pyro.infer.Trace_ELBO`.

    References:

    [1] `Variational Inference with Unnormalized Priors`,
        anonymous authors (under double-blind review)
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
                z_neg, log_q = draw_with_log_prob(module, batch)
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
                bound = bound + self._site_sum(log_q - lp_neg, site, ctx.num_particles)
                cd = cd + self._site_sum(lp_neg - lp_pos, site, ctx.num_particles)
                if i == 0:
                    zeta.update(self.owned_params(f"{self.name}_{name}", module))
            if i == 0:
                ctx.log_densities = lps
        like = particles[0][2][0][1]["value"]
        cd, bound = self._tensor_like(cd, like), self._tensor_like(bound, like)
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
        :param args: positional arguments of the model and guide.
        :param kwargs: keyword arguments of the model and guide.
        """
        with torch.enable_grad(), poutine.block():
            self._objectives(model, guide, args, kwargs, phase=self.phase, create_graph=False)
