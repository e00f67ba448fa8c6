r"""The machinery shared by the adversarial VAE-GAN hybrids :class:`~pyro_vsm.infer.AAELoss` and
:class:`~pyro_vsm.infer.VGHLoss` (Rosca, Lakshminarayanan & Mohamed, 2018).

**Labels.** One convention for every discriminator: the *code discriminator* :math:`C` labels
prior samples :math:`z \sim p(z)` real and posterior samples :math:`\hat z \sim q(z|x)` fake; the
*data discriminator* :math:`D` labels data :math:`x` real and reconstructions
:math:`\hat x` and prior samples :math:`G(z)` fake. A discriminator returns a *logit*
:math:`\ell = \log\frac{\sigma(\ell)}{1-\sigma(\ell)}`, which estimates
:math:`\log(\text{real}/\text{fake})`; at the optimum :math:`\ell_C = \log p(z)/q(z)`, so
:math:`\mathbb E_{q}[-\ell_C]` estimates :math:`\mathrm{KL}[q(z)\|p(z)]`. Cross-entropies are
computed from logits, :math:`-\log\sigma(\ell) = \operatorname{softplus}(-\ell)` and
:math:`-\log(1-\sigma(\ell)) = \operatorname{softplus}(\ell)`.

**Passes.** Each step runs, per particle, the guide once (:math:`\hat z`) and the model replayed
on it (the likelihood :math:`p(x|\hat z)` at every observed site, whose mean is the reconstruction
:math:`\hat x`); phases that need prior samples also run the model on its own, with its latent
unconditioned, which draws :math:`z \sim p(z)` from the model's own prior and gives
:math:`G(z)`, the likelihood's mean at the data site. A discriminator sees the value of a site
with shape ``batch_shape + event_shape`` and returns logits of shape ``batch_shape`` (a trailing
dimension of size 1 is dropped). Every per-point term is summed over the plates with the site's
plate scale and mask and averaged over particles, like :class:`~pyro.infer.Trace_ELBO`.
"""

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.nn.functional import softplus

from .._checks import check_positive, positive_int
from .grouped import GroupedLoss, Objective, split_params
from .schedules import CyclicSchedule, SinglePhase

__all__ = ["HybridLoss"]

ENCODER, GENERATOR = "encoder", "generator"
DATA, CODE = "data_discriminator", "code_discriminator"
GENERATOR_LOSSES = ("logit", "non_saturating")
UPDATES = ("cyclic", "simultaneous")


def _fool(logit, form):
    r"""The term a player minimises so that a discriminator calls its samples real:
    :math:`-\ell` (``"logit"``) or :math:`-\log\sigma(\ell)` (``"non_saturating"``)."""
    return -logit if form == "logit" else softplus(-logit)


def _real(logit):
    return softplus(-logit)  # -log σ(ℓ)


def _fake(logit):
    return softplus(logit)  # -log(1 - σ(ℓ))


class HybridLoss(GroupedLoss):
    r"""The common base of :class:`~pyro_vsm.infer.AAELoss` and :class:`~pyro_vsm.infer.VGHLoss`
    (see the module docstring for the conventions). Four parameter groups: the encoder (the
    parameters only the guide reads), the generator (the model's parameters) and the
    discriminators the loss owns.

    :param dict discriminators: ``{"data_discriminator": D, "code_discriminator": C}`` (the
        keys present choose the terms), in the order of their phases.
    :param bool prior_to_data: whether the data discriminator and the generator also see
        prior samples :math:`G(z)` (VGH++).
    :param bool encoder_data_adversarial: whether the encoder also minimises the data
        discriminator's generator term at its reconstructions.
    :param float real_weight: the weight of the real-data term of the data discriminator.
    :param str updates: ``"cyclic"`` or ``"simultaneous"``.
    :param int disc_steps: repeats of each discriminator phase per cycle.
    :param str generator_loss: ``"logit"`` or ``"non_saturating"``.
    :param float encoder_reconstruction_weight: :math:`\lambda_E`.
    :param float generator_reconstruction_weight: :math:`\lambda_G`.
    :param str prefix: prefix of the discriminators' names in Pyro's param store.
    :param kwargs: ``num_particles``, ``max_plate_nesting``, ``vectorize_particles``,
        ``retain_graph``, as for :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(
        self,
        discriminators,
        *,
        prior_to_data=False,
        encoder_data_adversarial=False,
        real_weight=1.0,
        updates="cyclic",
        disc_steps=1,
        generator_loss="logit",
        encoder_reconstruction_weight=1.0,
        generator_reconstruction_weight=1.0,
        prefix="",
        **kwargs,
    ):
        name = type(self).__name__
        if updates not in UPDATES:
            raise ValueError(f"{name}: updates must be 'cyclic' or 'simultaneous', got {updates!r}")
        disc_steps = positive_int(disc_steps, "disc_steps")
        if updates == "simultaneous" and disc_steps != 1:
            raise ValueError(
                f"{name}: disc_steps={disc_steps} needs updates='cyclic' (simultaneous updates "
                "move every group once per step)"
            )
        if generator_loss not in GENERATOR_LOSSES:
            raise ValueError(
                f"{name}: generator_loss must be 'logit' or 'non_saturating', got "
                f"{generator_loss!r}"
            )
        if not isinstance(encoder_data_adversarial, bool):
            raise ValueError(
                f"{name}: encoder_data_adversarial must be a bool, got {encoder_data_adversarial!r}"
            )
        if not isinstance(prefix, str):
            raise ValueError(f"{name}: prefix must be a str, got {prefix!r}")
        self.encoder_reconstruction_weight = check_positive(
            encoder_reconstruction_weight, "encoder_reconstruction_weight", allow_zero=True
        )
        self.generator_reconstruction_weight = check_positive(
            generator_reconstruction_weight, "generator_reconstruction_weight", allow_zero=True
        )
        self.real_weight = check_positive(real_weight, "real_weight")
        self.updates = updates
        self.disc_steps = disc_steps
        self.generator_loss = generator_loss
        self.encoder_data_adversarial = encoder_data_adversarial
        self.prior_to_data = bool(prior_to_data)
        self.prefix = prefix
        phases = [(ENCODER, 1), (GENERATOR, 1)] + [(k, disc_steps) for k in discriminators]
        schedule = CyclicSchedule(phases) if updates == "cyclic" else SinglePhase("joint")
        super().__init__(schedule=schedule, **kwargs)
        for key, module in discriminators.items():
            if not isinstance(module, nn.Module):
                raise ValueError(
                    f"{name}: {key} must be a torch.nn.Module mapping a site's values to logits, "
                    f"got {type(module).__name__}"
                )
            self.owned_modules[key] = module

    # -- the groups and terms of a phase ----------------------------------------------------
    @property
    def groups(self):
        r"""The parameter groups, in the order of the cyclic schedule's phases."""
        return (ENCODER, GENERATOR, *self.owned_modules)

    @property
    def steps_per_cycle(self):
        r"""The number of ``svi.step`` calls of one cycle (1 with simultaneous updates)."""
        if self.updates == "simultaneous":
            return 1
        return 2 + self.disc_steps * len(self.owned_modules)

    def _terms_needed(self, groups):
        has_data = DATA in self.owned_modules
        need = set()
        if ENCODER in groups:
            need |= {"rec", "c_post"} | ({"d_post"} if self.encoder_data_adversarial else set())
        if GENERATOR in groups:
            need |= {"rec"} | ({"d_post"} if has_data else set())
            need |= {"d_prior"} if self.prior_to_data else set()
        if DATA in groups:
            need |= {"d_real", "d_post"} | ({"d_prior"} if self.prior_to_data else set())
        if CODE in groups:
            need |= {"c_post", "c_prior"}
        return need

    # -- tracing -----------------------------------------------------------------------------
    def _latent_site(self, guide_trace):
        name = type(self).__name__
        latents = [
            (n, s)
            for n, s in guide_trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"]
        ]
        if len(latents) != 1:
            raise ValueError(
                f"{name}: the code discriminator matches one latent site, but the guide has "
                f"{len(latents)}: {[n for n, _ in latents]}"
            )
        site_name, site = latents[0]
        if not getattr(site["fn"], "has_rsample", False):
            raise ValueError(
                f"{name}: guide site '{site_name}' ({type(site['fn']).__name__}) is not "
                "reparametrisable; the encoder is trained through its samples, so use a "
                "reparametrisable guide (e.g. Normal or Delta)"
            )
        return site_name, site

    def _observed_sites(self, model_trace):
        sites = [
            (n, s)
            for n, s in model_trace.nodes.items()
            if s["type"] == "sample" and s["is_observed"]
        ]
        if not sites:
            raise ValueError(
                f"{type(self).__name__}: the model has no observed site; the reconstruction term "
                "is -log p(x|z) of the observed sites"
            )
        return sites

    def _data_site(self, observed):
        if len(observed) != 1:
            raise ValueError(
                f"{type(self).__name__}: the data discriminator sees one observed site, but the "
                f"model has {len(observed)}: {[n for n, _ in observed]}"
            )
        return observed[0]

    @staticmethod
    def _mean(site_name, site):
        try:
            return site["fn"].mean
        except NotImplementedError as e:
            raise ValueError(
                f"observed site '{site_name}' ({type(site['fn']).__name__}) has no mean, which "
                "the data discriminator sees as the reconstruction"
            ) from e

    def _prior_traces(self, model, args, kwargs):
        r"""The model run on its own: latents drawn from the model's prior."""
        if self.vectorize_particles:
            runs = [self._vectorized_num_particles(model)]
        else:
            runs = [model] * self.num_particles
        return [prune_subsample_sites(poutine.trace(m).get_trace(*args, **kwargs)) for m in runs]

    def _logits(self, key, value, site):
        batch = site["fn"].batch_shape
        out = self.owned_modules[key](value)
        if out.dim() == len(batch) + 1 and out.shape[-1] == 1:
            out = out.squeeze(-1)
        if out.shape != batch:
            raise ValueError(
                f"{type(self).__name__}: the {key} returned logits of shape {tuple(out.shape)} "
                f"for values of shape {tuple(value.shape)}; expected the site's batch shape "
                f"{tuple(batch)} (or with a trailing 1)"
            )
        return out

    # -- the objectives -------------------------------------------------------------------------
    def _objectives(self, model, guide, args, kwargs, *, phase, create_graph):
        groups = set(self.groups) if phase == "joint" else {phase}
        need = self._terms_needed(groups)
        through = create_graph and bool(groups & {ENCODER, GENERATOR})
        with torch.set_grad_enabled(through):
            traces = list(self._get_traces(model, guide, args, kwargs))
            priors = (
                self._prior_traces(model, args, kwargs) if need & {"c_prior", "d_prior"} else []
            )
        model_params, guide_params = split_params(
            [m for m, _ in traces] + priors, [g for _, g in traces]
        )
        terms, site_terms = {}, {}

        def add(key, value, site):
            terms.setdefault(key, []).append((value, site))

        with torch.set_grad_enabled(create_graph):
            for model_trace, guide_trace in traces:
                latent, zsite = self._latent_site(guide_trace)
                observed = self._observed_sites(model_trace)
                if "rec" in need:
                    for n, s in observed:
                        add("rec", -s["log_prob"], None)
                        site_terms[n] = (
                            site_terms.get(n, 0.0) - s["log_prob_sum"].detach() / self.num_particles
                        )
                if "c_post" in need:
                    add("c_post", self._logits(CODE, zsite["value"], zsite), zsite)
                if need & {"d_post", "d_real"}:
                    dname, dsite = self._data_site(observed)
                    if "d_post" in need:
                        add("d_post", self._logits(DATA, self._mean(dname, dsite), dsite), dsite)
                    if "d_real" in need:
                        fn = dsite["fn"]
                        real = dsite["value"].expand(fn.batch_shape + fn.event_shape)
                        add("d_real", self._logits(DATA, real, dsite), dsite)
            for prior_trace in priors:
                psite = prior_trace.nodes[latent]
                if "c_prior" in need:
                    add("c_prior", self._logits(CODE, psite["value"], psite), psite)
                if "d_prior" in need:
                    dname, dsite = self._data_site(self._observed_sites(prior_trace))
                    add("d_prior", self._logits(DATA, self._mean(dname, dsite), dsite), dsite)
            return self._build(groups, terms, site_terms, latent, model_params, guide_params)

    def _build(self, groups, terms, site_terms, latent, model_params, guide_params):
        s = self.num_particles
        form = self.generator_loss

        def total(key, fn):
            pairs = terms[key]
            if key == "rec":  # already scaled and masked by Pyro
                return sum(t.sum() for t, _ in pairs) / s
            parts = [scale_and_mask(fn(t), site["scale"], site["mask"]).sum() for t, site in pairs]
            return sum(parts[1:], parts[0]) / s

        def accuracy(real_key, fake_key):
            right = [(t > 0).to(t.dtype).mean() for t, _ in terms[real_key]]
            right += [(t < 0).to(t.dtype).mean() for t, _ in terms[fake_key]]
            return sum(right[1:], right[0]) / len(right)

        def sites(extra):
            def read():
                out = dict(site_terms)
                out.update({k: v.detach() for k, v in extra.items()})
                return out

            return read

        objectives = []
        if ENCODER in groups:
            rec, code = total("rec", None), total("c_post", lambda t: _fool(t, form))
            value = self.encoder_reconstruction_weight * rec + code
            parts = {"reconstruction": rec, "code_adversarial": code}
            if self.encoder_data_adversarial:
                parts["data_adversarial"] = total("d_post", lambda t: _fool(t, form))
                value = value + parts["data_adversarial"]
            objectives.append(
                Objective(ENCODER, value, guide_params, sites=sites({latent: code}), parts=parts)
            )
        if GENERATOR in groups:
            rec = total("rec", None)
            value = self.generator_reconstruction_weight * rec
            parts = {"reconstruction": rec}
            if DATA in self.owned_modules:
                parts["data_adversarial"] = total("d_post", lambda t: _fool(t, form))
                value = value + parts["data_adversarial"]
            if self.prior_to_data:
                parts["prior_adversarial"] = total("d_prior", lambda t: _fool(t, form))
                value = value + parts["prior_adversarial"]
            objectives.append(
                Objective(GENERATOR, value, model_params, sites=sites({}), parts=parts)
            )
        if DATA in groups:
            value = self.real_weight * total("d_real", _real) + total("d_post", _fake)
            if self.prior_to_data:
                value = value + total("d_prior", _fake)
            params = self.owned_params(self.prefix + DATA, self.owned_modules[DATA])
            parts = {"data_accuracy": accuracy("d_real", "d_post")}
            objectives.append(
                Objective(DATA, value, params, sites=sites({DATA: value}), parts=parts)
            )
        if CODE in groups:
            value = total("c_post", _fake) + total("c_prior", _real)
            params = self.owned_params(self.prefix + CODE, self.owned_modules[CODE])
            parts = {"code_accuracy": accuracy("c_prior", "c_post")}
            objectives.append(
                Objective(CODE, value, params, sites=sites({CODE: value}), parts=parts)
            )
        return objectives

    def _evaluate(self, model, guide, args, kwargs):
        r"""The sum of every group's objective (whatever the phase); not a bound."""
        return self._total(
            self._objectives(model, guide, args, kwargs, phase="joint", create_graph=False)
        )
