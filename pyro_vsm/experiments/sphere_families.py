r"""The explicit and implicit encoders of Wang et al. (2020), Section 6.2.1 (Table 1), as
objectives of ``pyro-vsm``: ``explicit-sphere``, ``implicit-sphere`` and ``implicit-gaussian``.

* ``explicit-sphere``: :class:`~pyro_vsm.models.SphericalVAE` (uniform prior on
  :math:`S^n`, :math:`n` = ``latent_dim``, decoder on :math:`z\sqrt{n+1}`) with a von
  Mises--Fisher encoder (:class:`~pyro_vsm.guides.VonMisesFisherEncoder`), ``Trace_ELBO``;
* ``implicit-sphere``: the same model with an implicit encoder
  :math:`z = f([x, \varepsilon])/\lVert f\rVert` (:class:`~pyro_vsm.guides.ImplicitEncoder`,
  :math:`\varepsilon \in \mathbb R^{8}`), :class:`~pyro_vsm.infer.ImplicitELBO` with
  Riemannian minimum-velocity learning of the conditional energy (step size
  :math:`10^{-3}`, energy penalty 0.2, simultaneous updates);
* ``implicit-gaussian``: :class:`~pyro_vsm.models.EuclideanVAE` (:math:`\mathcal N(0, I_n)`)
  with the Euclidean implicit encoder and ``ImplicitELBO``.

Decoders and encoders are the run's networks (MLPs; the von Mises--Fisher encoder may be a conv
net); the likelihood is Gaussian with a learnable scalar variance started at ``gamma_init``,
as for every other objective, and Adam with the run's learning rate (the paper: RMSProp).

Evaluation: AIS from the prior moves sphere latents through the exact Gaussian augmentation
that :func:`~pyro_vsm.evaluation.ais_log_likelihood` applies itself. An implicit encoder has no
density :math:`q(z|x)`, so the metrics that weight by it (importance-sampled NLL and its
:math:`\hat k`, the negative ELBO, the score-matching loss of :math:`p(x)`, the marginal KL)
are ``n/a``; its posterior "mean" is one draw of the encoder (reconstruction, active units).
"""

import torch
from pyro.distributions import constraints
from pyro.infer import Trace_ELBO
from pyro.nn import PyroParam

from ..guides import ImplicitEncoder, VonMisesFisherEncoder
from ..infer import ImplicitELBO
from ..models import EuclideanVAE, SphericalVAE, mlp
from ..optim import ForeachAdam
from .families import _gaussian_noise, _gi, _place, networks
from .registry import Built, ObjectiveSpec, register

__all__ = ["NOISE_DIM", "STEP_SIZE"]

WANG = "Wang, Cheng, Li, Zhu & Zhang (2020), A Wasserstein minimum velocity approach"
#: the implicit encoder's noise dimension and the MVL step size (the paper's)
NOISE_DIM, STEP_SIZE = 8, 1e-3
#: the conditional energy's penalty (ImplicitELBO's default)
ENERGY_PENALTY = 0.2
IMPLICIT_NA = "implicit encoder: no density q(z|x) to weight by"
NO_DENSITY = ("test_nll", "khat_above_0.7", "test_neg_elbo", "test_score_matching", "marginal_kl")


def _model(config, x_train, sphere):
    obs_shape, n = tuple(x_train.shape[1:]), config["latent_dim"]
    coordinates = n + 1 if sphere else n
    decoder, encoder = networks({**config, "latent_dim": coordinates}, obs_shape, n + 2)
    cls = SphericalVAE if sphere else EuclideanVAE
    model = cls(decoder, n, "gaussian", gamma="scalar")
    model.gamma = PyroParam(torch.tensor(float(_gi(config))), constraint=constraints.positive)
    return model, encoder, _gaussian_noise(model)


def _built(config, x_train, model, guide, loss, observe, settings, not_applicable=None):
    _place((model, guide), x_train)
    return Built(
        model=model,
        guide=guide,
        loss=loss,
        optim=ForeachAdam({"lr": config["lr"]}),
        steps=config["steps"],
        prior_latents=lambda k: model.prior(x_train).sample((k,)),
        decode=model.decode,
        observe=observe,
        not_applicable=dict(not_applicable or {}),
        settings=settings,
    )


def _explicit_sphere(config, x_train):
    model, encoder, observe = _model(config, x_train, sphere=True)
    guide = VonMisesFisherEncoder(encoder, config["latent_dim"])
    loss = Trace_ELBO(
        num_particles=config["particles"], vectorize_particles=True, max_plate_nesting=1
    )
    settings = {"prior": "uniform on S^n", "guide": "von Mises-Fisher"}
    return _built(config, x_train, model, guide, loss, observe, settings)


def _implicit(sphere):
    def build(config, x_train):
        model, _, observe = _model(config, x_train, sphere)
        n, d = config["latent_dim"], x_train[0].numel()
        manifold = "sphere" if sphere else None
        net = mlp(d + NOISE_DIM, tuple(config["hidden"]), n + 1 if sphere else n)
        guide = ImplicitEncoder(net, n, NOISE_DIM, manifold=manifold)
        loss = ImplicitELBO(
            manifold=manifold,
            step_size=STEP_SIZE,
            energy_penalty=ENERGY_PENALTY,
            num_particles=1,
            max_plate_nesting=1,
        )
        settings = {
            "prior": "uniform on S^n" if sphere else "N(0, I)",
            "noise_dim": NOISE_DIM,
            "mvl_step_size": STEP_SIZE,
            "energy_penalty": ENERGY_PENALTY,
            "updates": "simultaneous",
        }
        na = {k: IMPLICIT_NA for k in NO_DENSITY}
        return _built(config, x_train, model, guide, loss, observe, settings, na)

    return build


register(
    ObjectiveSpec(
        "explicit-sphere",
        _explicit_sphere,
        "sphere latents",
        "hyperspherical VAE: uniform prior on S^n, von Mises-Fisher encoder, ELBO",
        f"Davidson et al. (2018); {WANG}: Section 6.2.1",
        cost=1.5,
    )
)
register(
    ObjectiveSpec(
        "implicit-sphere",
        _implicit(True),
        "sphere latents",
        "implicit encoder on S^n, entropy gradient by Riemannian MVL (ImplicitELBO)",
        f"{WANG}: Sections 4.2, 6.2.1",
        models=("mlp",),
        cost=2.5,
    )
)
register(
    ObjectiveSpec(
        "implicit-gaussian",
        _implicit(False),
        "implicit encoder",
        "implicit encoder in R^n, entropy gradient by MVL (ImplicitELBO)",
        f"{WANG}: Sections 4.2, 6.2.1",
        models=("mlp",),
        cost=2.5,
    )
)
