r"""The objectives of ``pyro-vsm``: one :func:`~pyro_vsm.experiments.registry.register` call
each (a builder: model + guide + loss + evaluation hooks), with their documented defaults.

All share the networks of the run configuration: a decoder and an encoder that are MLPs with
``hidden`` widths (``--model mlp``) or DCGAN-style conv nets of width ``hidden[0]`` for square
images (``--model conv``), a Gaussian likelihood with a learnable scalar variance :math:`\gamma`
(initial value ``gamma_init``),
``particles`` guide samples per point, Adam with learning rate ``lr``. Defaults specific to a
family are listed in its builder and recorded under ``settings`` in the report.

New families (minimum-velocity priors, sphere latents, adversarial hybrids) join with one more
``register(ObjectiveSpec(...))`` at the end of this module (or of their own module, imported by
:mod:`pyro_vsm.experiments`); the test suite runs every registered name in a smoke setting.
"""

import contextlib
import math

import torch
from pyro.infer import Trace_ELBO
from pyro.optim import ClippedAdam

from ..distributions import GRBMEnergy
from ..guides import BernoulliEncoder, DiagonalNormalEncoder, GaussianVariationalPrior
from ..infer import (
    AdversarialPriorLoss,
    BetaELBO,
    ImportanceWeightedPriorLoss,
    JointFisherLoss,
    LaggingInferenceELBO,
    LiBILoss,
    M1Loss,
    M2Loss,
    M3Loss,
    MVLPriorLoss,
    SSMPriorLoss,
)
from ..models import (
    BinaryLatentVAE,
    ConvDecoder,
    ConvEncoder,
    EnergyPriorVAE,
    GaussianVAE,
    VampPriorVAE,
    mlp,
)
from ..optim import ForeachAdam
from .registry import Built, ObjectiveSpec, register

__all__ = ["make_objective", "networks"]

WENLIANG = "Wenliang (2022), On the failure of variational score matching for VAE models"
PRIORS = "Variational inference with unnormalized priors (anonymous, under review)"
#: GRBM hidden units of the energy priors (at most 20: exact log Z by enumeration)
GRBM_HIDDEN_SMALL, GRBM_HIDDEN = 8, 12
#: learning rate of the energy-prior parameters relative to the VAE's (the paper: 2e-4 / 1e-3)
PRIOR_LR_RATIO = 0.2
#: K of the importance-weighted log Z estimator; VampPrior pseudo-inputs
IW_SAMPLES, PSEUDO_INPUTS = 16, 16
#: step size of the minimum-velocity estimate (MVLPriorLoss's default)
MVL_STEP = 1e-3
#: beta of beta-elbo (the LiBI paper's grid: 0.5, 2, 5); LiBI rounds and gradient clipping
BETA, LIBI_ROUNDS, CLIP_NORM = 0.5, 1, 10.0


def _kw(config):
    return dict(num_particles=config["particles"], vectorize_particles=True, max_plate_nesting=1)


def make_objective(name, *, particles=1, guide_steps=1, bilevel_steps=0, max_plate_nesting=1):
    r"""The loss of a score-matching-family name: ``elbo``, ``m1-kl``, ``m1-fisher``,
    ``m2-kl``, ``m2-fisher``, ``m3-kl``, ``m3-fisher`` or ``joint-fisher`` (M2 and M3 use at
    least 2 particles: their squared means are U-statistics).

    :param str name: the objective.
    :param int particles: guide samples per point.
    :param int guide_steps: ``J``, guide updates per model update.
    :param int bilevel_steps: ``K`` of M3.
    :param int max_plate_nesting: as for ``Trace_ELBO``.
    """
    kw = dict(
        num_particles=particles, vectorize_particles=True, max_plate_nesting=max_plate_nesting
    )
    if name == "elbo":
        return Trace_ELBO(**kw)
    if name == "joint-fisher":
        return JointFisherLoss(**kw)
    learning, _, inference = name.partition("-")
    cls = {"m1": M1Loss, "m2": M2Loss, "m3": M3Loss}.get(learning)
    if cls is None or inference not in ("kl", "fisher"):
        raise ValueError(f"{name!r} is not an objective of the score-matching family")
    if cls is not M1Loss:
        kw["num_particles"] = max(particles, 2)
    if cls is M3Loss:
        kw["bilevel_steps"] = bilevel_steps
    return cls(inference=inference, guide_steps=guide_steps, **kw)


def networks(config, obs_shape, encoder_out):
    r"""``(decoder, encoder)`` of a run configuration: MLPs, or conv nets for square images.

    :param dict config: the run configuration.
    :param tuple obs_shape: the shape of one observation.
    :param int encoder_out: the encoder's output size.
    """
    d, hidden = config["latent_dim"], tuple(config["hidden"])
    if config["model"] == "conv":
        if len(obs_shape) != 3 or obs_shape[1] != obs_shape[2]:
            raise ValueError(
                f"--model conv needs square images (channels, size, size), got {obs_shape}"
            )
        c, size, width = obs_shape[0], obs_shape[1], hidden[0]
        return ConvDecoder(d, c, width, size), ConvEncoder(encoder_out, c, width, size)
    if len(obs_shape) != 1:
        raise ValueError(f"--model mlp needs flat observations, got shape {obs_shape}")
    return mlp(d, hidden, obs_shape[0]), mlp(obs_shape[0], hidden, encoder_out)


def _gi(config):
    return config.get("gamma_init") or 1.0


def _place(modules, x):
    for m in modules:
        m.to(device=x.device, dtype=x.dtype)


def _gaussian_noise(model):
    def observe(loc):
        return loc + model.variance().to(loc).sqrt() * torch.randn_like(loc)

    return observe


def _vae(config, x_train, loss, optim=None, steps=None, settings=None):
    r"""A Gaussian VAE (``--latent gaussian``) or a binary-latent VAE (``--latent binary``)."""
    obs_shape, d = tuple(x_train.shape[1:]), config["latent_dim"]
    binary = config["latent"] == "binary"
    decoder, encoder = networks(config, obs_shape, d if binary else 2 * d)
    settings = dict(settings or {})
    if binary:
        tau = config["temperature"]
        model = BinaryLatentVAE(decoder, d, obs_shape, temperature=tau, gamma_init=_gi(config))
        guide = BernoulliEncoder(encoder, d, temperature=tau)
        settings["temperature"] = tau

        @contextlib.contextmanager
        def evaluation():
            model.relaxed = guide.relaxed = False
            try:
                yield
            finally:
                model.relaxed = guide.relaxed = True

        def prior_latents(n):
            p = torch.full((n, d), model.prior_probs, dtype=x_train.dtype, device=x_train.device)
            return torch.bernoulli(p)

        extra = dict(
            evaluation=evaluation,
            decode=model.decode,
            not_applicable={
                "test_nll_ais": "binary latents: HMC-based AIS needs continuous latents"
            },
        )
    else:
        model = GaussianVAE(decoder, d, obs_shape, gamma_init=_gi(config))
        guide = DiagonalNormalEncoder(encoder, d)

        def prior_latents(n):
            return torch.randn(n, d, dtype=x_train.dtype, device=x_train.device)

        extra = dict(decode=model.decoder)
    _place((model, guide), x_train)
    return Built(
        model=model,
        guide=guide,
        loss=loss,
        optim=optim or ForeachAdam({"lr": config["lr"]}),
        steps=config["steps"] if steps is None else steps,
        prior_latents=prior_latents,
        observe=_gaussian_noise(model),
        settings=settings,
        **extra,
    )


def _score_family(name):
    def build(config, x_train):
        loss = make_objective(
            name,
            particles=config["particles"],
            guide_steps=config["guide_steps"],
            bilevel_steps=config["bilevel_steps"],
        )
        settings = {"particles": loss.num_particles}
        if name != "elbo" and name != "joint-fisher":
            settings["guide_steps"] = config["guide_steps"]
        if name.startswith("m3"):
            settings["bilevel_steps"] = config["bilevel_steps"]
        return _vae(config, x_train, loss, settings=settings)

    return build


def _beta_elbo(config, x_train):
    return _vae(config, x_train, BetaELBO(beta=BETA, **_kw(config)), settings={"beta": BETA})


def _lagging(config, x_train):
    # He et al. check the outer criterion once per epoch
    every = max(1, math.ceil(config["num_data"] / config["batch_size"]))
    loss = LaggingInferenceELBO(criterion="mi", check_every=every, **_kw(config))
    return _vae(config, x_train, loss, settings={"criterion": "mi", "check_every": every})


def _libi(config, x_train):
    phase = max(1, (config["steps"] - 1) // (2 * LIBI_ROUNDS))
    loss = LiBILoss(
        likelihood_steps=phase, inference_steps=phase, num_rounds=LIBI_ROUNDS, **_kw(config)
    )
    optim = ClippedAdam({"lr": config["lr"], "clip_norm": CLIP_NORM})
    settings = {"rounds": LIBI_ROUNDS, "phase_steps": phase, "clip_norm": CLIP_NORM}
    return _vae(config, x_train, loss, optim=optim, steps=loss.total_steps, settings=settings)


def _energy_prior(make_loss):
    r"""A VAE with a GRBM prior, the energy trained by ``make_loss(config)``."""

    def build(config, x_train):
        obs_shape, d = tuple(x_train.shape[1:]), config["latent_dim"]
        decoder, encoder = networks(config, obs_shape, 2 * d)
        hidden = GRBM_HIDDEN_SMALL if d <= 2 else GRBM_HIDDEN
        model = EnergyPriorVAE(
            decoder, GRBMEnergy(d, hidden), obs_shape=obs_shape, gamma_init=_gi(config)
        )
        guide = DiagonalNormalEncoder(encoder, d)
        _place((model, guide), x_train)
        lr = config["lr"]
        optim = ForeachAdam(
            lambda name: {"lr": lr * PRIOR_LR_RATIO if name.startswith("energy.") else lr}
        )
        loss, settings = make_loss(config, d)
        energy = model.energy

        def log_z():
            from ..evaluation import log_partition

            if energy.num_hidden <= energy.max_exact_hidden:
                return energy.log_partition().detach(), True
            return log_partition(energy, method="ais").detach(), False

        def prior_latents(n):
            log_w, means, scale = energy.mixture_components()  # 2^H Gaussians: exact draws
            k = torch.distributions.Categorical(logits=log_w).sample((n,))
            return means[k] + scale * torch.randn_like(means[k])

        return Built(
            model=model,
            guide=guide,
            loss=loss,
            optim=optim,
            steps=config["steps"],
            prior_latents=prior_latents,
            decode=model.decode,
            observe=_gaussian_noise(model),
            log_z=log_z,
            ais_start="guide",
            settings={
                "prior": f"GRBM, {hidden} hidden units",
                "prior_lr": lr * PRIOR_LR_RATIO,
                **settings,
            },
        )

    return build


def _ssm_loss(config, d):
    return SSMPriorLoss(**_kw(config)), {"projections": 1}


def _mvl_loss(config, d):
    loss = MVLPriorLoss(step_size=MVL_STEP, **_kw(config))
    return loss, {"estimator": "langevin", "step_size": MVL_STEP, "control_variate": True}


def _adversarial_loss(config, d):
    try:
        import zuko  # noqa: F401

        adversary, label = None, "IAF (zuko, 4 transforms)"
    except ImportError:
        adversary, label = GaussianVariationalPrior(d), "full-covariance Gaussian (no zuko)"
    return AdversarialPriorLoss(adversary, **_kw(config)), {"variational_prior": label}


def _iw_loss(config, d):
    loss = ImportanceWeightedPriorLoss(IW_SAMPLES, vectorize_particles=True, max_plate_nesting=1)
    return loss, {"iw_samples": IW_SAMPLES}


def _vampprior(config, x_train):
    obs_shape, d = tuple(x_train.shape[1:]), config["latent_dim"]
    decoder, encoder = networks(config, obs_shape, 2 * d)
    guide = DiagonalNormalEncoder(encoder, d)
    k = min(PSEUDO_INPUTS, x_train.shape[0])
    init = x_train[torch.randperm(x_train.shape[0], device=x_train.device)[:k]]
    model = VampPriorVAE(decoder, guide, k, pseudo_inputs=init.cpu(), gamma_init=_gi(config))
    _place((model, guide), x_train)
    return Built(
        model=model,
        guide=guide,
        loss=Trace_ELBO(**_kw(config)),
        optim=ForeachAdam({"lr": config["lr"]}),
        steps=config["steps"],
        prior_latents=lambda n: model.prior().sample((n,)),
        decode=model.decode,
        observe=_gaussian_noise(model),
        settings={"pseudo_inputs": k, "pseudo_init": "random training points"},
    )


BINARY_OK = ("gaussian", "binary")
_SCORE = [
    ("elbo", "Trace_ELBO, joint updates of model and guide", "Kingma & Welling (2014)", 1.0),
    ("m1-kl", "M1 learning, KL inference (Algorithm 1)", f"{WENLIANG}: eq. 8, Alg. 1", 1.0),
    ("m1-fisher", "M1 learning, posterior-Fisher inference", f"{WENLIANG}: eq. 8, §3.3", 1.2),
    ("m2-kl", "M2 (Swersky et al.) learning, KL inference", f"{WENLIANG}: eq. 13", 1.2),
    ("m2-fisher", "M2 learning, posterior-Fisher inference", f"{WENLIANG}: eq. 13", 1.3),
    ("m3-kl", "M3 (Bao et al.) learning, KL inference", f"{WENLIANG}: eq. 15, App. B.1", 1.3),
    ("m3-fisher", "M3 learning, posterior-Fisher inference", f"{WENLIANG}: eq. 15", 1.4),
    ("joint-fisher", "joint Fisher divergence (Fisher AE)", f"{WENLIANG}: eqs. 6-8", 2.0),
]
for _name, _summary, _paper, _cost in _SCORE:
    register(
        ObjectiveSpec(
            _name,
            _score_family(_name),
            "score matching" if _name != "elbo" else "baseline",
            _summary,
            _paper,
            latents=BINARY_OK if _name in ("elbo", "m1-kl", "m1-fisher") else ("gaussian",),
            cost=_cost,
        )
    )
LIBI = "Yacoby, Pan & Doshi-Velez (2020), Characterizing and avoiding problematic global optima"
register(
    ObjectiveSpec(
        "beta-elbo", _beta_elbo, "LiBI baselines", "beta-VAE, beta = 0.5", "Higgins et al. (2017)"
    )
)
register(
    ObjectiveSpec(
        "lagging",
        _lagging,
        "LiBI baselines",
        "lagging inference networks (aggressive guide updates)",
        "He et al. (2019), Algorithm 1",
    )
)
register(
    ObjectiveSpec(
        "libi",
        _libi,
        "LiBI",
        "likelihood before inference: point codes, then the guide",
        f"{LIBI}: eqs. 44-46",
        cost=1.2,
    )
)
register(
    ObjectiveSpec(
        "ssm-prior",
        _energy_prior(_ssm_loss),
        "energy prior",
        "GRBM prior trained by sliced score matching",
        f"{PRIORS}: Algorithm 1",
        cost=1.5,
    )
)
MVL = "Wang, Cheng, Li, Zhu & Zhang (2020), A Wasserstein minimum velocity approach"
register(
    ObjectiveSpec(
        "mvl-prior",
        _energy_prior(_mvl_loss),
        "energy prior",
        "GRBM prior trained by minimum-velocity learning (no second derivatives)",
        f"{PRIORS}: Algorithm 1, with {MVL}: Section 3.2",
        cost=1.5,
    )
)
register(
    ObjectiveSpec(
        "adversarial-prior",
        _energy_prior(_adversarial_loss),
        "energy prior",
        "GRBM prior, contrastive divergence against a flow",
        f"{PRIORS}: Algorithm 2",
        cost=3.0,
    )
)
register(
    ObjectiveSpec(
        "iw-prior",
        _energy_prior(_iw_loss),
        "energy prior",
        "GRBM prior, log Z by self-normalised importance sampling",
        f"{PRIORS}: eq. 5",
        cost=1.5,
    )
)
register(
    ObjectiveSpec(
        "vampprior",
        _vampprior,
        "learned prior",
        "VampPrior (mixture of posteriors at pseudo-inputs), ELBO",
        "Tomczak & Welling (2018)",
        cost=1.5,
    )
)
# ---- families that land later join here, one register(...) each --------------------------
