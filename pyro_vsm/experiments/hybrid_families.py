r"""The distribution-matching objectives of ``pyro-vsm``: the adversarial autoencoder
(``aae``) and VGH/VGH++ (``vgh``, ``vgh++``) of Rosca, Lakshminarayanan & Mohamed (2018).

Model and guide are the run's Gaussian VAE (decoder mean :math:`G(z)`, learnable observation
variance :math:`\gamma`, prior :math:`\mathcal N(0, I)`) and diagonal Gaussian encoder, so the
held-out metrics are those of every other objective: the reconstruction term is the model's own
:math:`-\log p_\theta(x|\hat z)`, and the likelihood :math:`p_\theta(x)` that the table
estimates is that of the decoder with its Gaussian noise. Defaults (the paper's Appendix K and
Table 3, scaled to the run):

* discriminators: MLPs with three hidden layers of the run's first hidden width, leaky ReLU
  (0.2); on images (``--model conv``) the data discriminator is a conv net of the run's width;
* Adam with :math:`\beta = (0.5, 0.9)`, learning rate ``lr`` for encoder and decoder and
  ``lr / 2`` for the discriminators (5e-4 against 1e-3);
* Algorithm 5's updates: one parameter group per ``svi.step`` (encoder, generator, then each
  discriminator once), every step of a cycle on the same minibatch; ``--steps`` counts cycles,
  so each group is updated as often as the VAE's parameters (AAE: 3 ``svi.step`` calls per
  cycle, VGH: 4);
* the logit form of the adversarial terms (Algorithm 5; the paper's footnote uses the
  non-saturating one), no data-adversarial term for the encoder.

``pyro-vsm train --devices N`` (Lightning) trains these losses with one torch Adam for all
groups and a fresh minibatch per step; the settings above hold for ``compare`` and single-process
``train``.

The guide's variance is not penalised (marginal matching only), so it collapses towards the
encoder's floor: importance sampling with the guide as proposal then degrades, which the
:math:`\hat k` column shows; AIS starts from the prior and does not depend on the guide.
"""

from torch import nn

from ..infer import AAELoss, VGHLoss
from ..models import ConvEncoder, mlp
from ..optim import ForeachAdam
from .families import _vae
from .registry import ObjectiveSpec, register

__all__ = ["DISC_LR_RATIO", "code_discriminator", "data_discriminator"]

ROSCA = "Rosca, Lakshminarayanan & Mohamed (2018), Distribution matching in variational inference"
#: the discriminators' learning rate relative to encoder and decoder (5e-4 / 1e-3)
DISC_LR_RATIO = 0.5
#: Adam's betas (Appendix K)
BETAS = (0.5, 0.9)


def _leaky():
    return nn.LeakyReLU(0.2)


def code_discriminator(config):
    r"""The code discriminator :math:`C`: latents to logits.

    :param dict config: the run configuration.
    """
    width = config["hidden"][0]
    return mlp(config["latent_dim"], (width,) * 3, 1, activation=_leaky)


def data_discriminator(config, obs_shape):
    r"""The data discriminator :math:`D`: observations to logits (a conv net for images).

    :param dict config: the run configuration.
    :param tuple obs_shape: the shape of one observation.
    """
    width = config["hidden"][0]
    if config["model"] == "conv":
        return ConvEncoder(1, obs_shape[0], width, obs_shape[1])
    return mlp(obs_shape[0], (width,) * 3, 1, activation=_leaky)


def _optim(config):
    lr = config["lr"]

    def args(name):
        rate = lr * DISC_LR_RATIO if "discriminator" in name else lr
        return {"lr": rate, "betas": BETAS}

    return ForeachAdam(args)


def _hybrid(make_loss):
    def build(config, x_train):
        obs_shape = tuple(x_train.shape[1:])
        loss, settings = make_loss(config, obs_shape)
        for module in loss.owned_modules.values():
            module.to(device=x_train.device, dtype=x_train.dtype)
        cycle = loss.steps_per_cycle
        settings.update(
            discriminator_lr=config["lr"] * DISC_LR_RATIO,
            betas=list(BETAS),
            generator_loss="logit",
            steps_per_cycle=cycle,
        )
        built = _vae(
            config,
            x_train,
            loss,
            optim=_optim(config),
            steps=config["steps"] * cycle,
            settings=settings,
        )
        built.steps_per_batch = cycle
        return built

    return build


def _aae(config, obs_shape):
    loss = AAELoss(code_discriminator(config), max_plate_nesting=1)
    return loss, {"code_discriminator": f"MLP, 3 x {config['hidden'][0]}, leaky ReLU"}


def _vgh(variant):
    def make(config, obs_shape):
        loss = VGHLoss(
            data_discriminator(config, obs_shape),
            code_discriminator(config),
            variant=variant,
            max_plate_nesting=1,
        )
        width = config["hidden"][0]
        kind = "conv net" if config["model"] == "conv" else f"MLP, 3 x {width}, leaky ReLU"
        return loss, {"data_discriminator": kind, "code_discriminator": "MLP, leaky ReLU"}

    return make


register(
    ObjectiveSpec(
        "aae",
        _hybrid(_aae),
        "distribution matching",
        "adversarial autoencoder: reconstruction + code discriminator",
        f"Makhzani et al. (2015); {ROSCA}: Section 4",
        cost=2.0,
    )
)
register(
    ObjectiveSpec(
        "vgh",
        _hybrid(_vgh("vgh")),
        "distribution matching",
        "VGH: code discriminator + data discriminator on reconstructions",
        f"{ROSCA}: Algorithm 5, eq. 8",
        cost=3.0,
    )
)
register(
    ObjectiveSpec(
        "vgh++",
        _hybrid(_vgh("vgh++")),
        "distribution matching",
        "VGH++: the data discriminator also sees prior samples G(z)",
        f"{ROSCA}: Algorithm 5, eq. 9",
        cost=3.5,
    )
)
