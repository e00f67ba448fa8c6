r"""Run configurations of the command line: the settings that define a model, its data and its
objective, and the defaults chosen from the data.

Defaults chosen from the data (flattened dimension :math:`d` of one observation, mean
per-dimension variance :math:`v` of the training data):

.. list-table::
   :header-rows: 1

   * - setting
     - :math:`d \le 4` (2-D sets)
     - larger data (images, wide files)
   * - latent size
     - 2
     - :math:`\mathrm{clip}(\mathrm{round}\sqrt d, 2, 32)` (digits: 8)
   * - hidden widths
     - 30, 30
     - two layers of :math:`\mathrm{clip}(d, 30, 512)` (digits: 64); ``--model conv``: width 32
   * - initial :math:`\gamma`
     - 1
     - :math:`v/10` (digits: 0.0065)
   * - steps, batch size, learning rate
     - 2000, 200, 3e-3
     - 2000, 128, 1e-3
   * - AIS points
     - 1000
     - 100

The initial observation variance matters on images: started at 1 (many times the data's
variance) the KL term outweighs the reconstruction term from the first step, the posterior
collapses before :math:`\gamma` has shrunk, and it does not recover within the run (digits,
ELBO, 2000 steps: marginal KL 0.005, no active unit, NLL 12.7 nats); started at a tenth of the
data variance every latent unit is used (marginal KL 7.6, 8 of 8 active, NLL -24.5).
"""

import math

from ..datasets.files import image_shape

__all__ = ["CONFIG_KEYS", "data_defaults", "evaluation_defaults", "resolve_config"]

#: Keys of a run configuration (saved in checkpoints; they define model, data and objective).
CONFIG_KEYS = (
    "dataset",
    "num_data",
    "num_test",
    "seed",
    "model",
    "latent",
    "latent_dim",
    "hidden",
    "loss",
    "steps",
    "particles",
    "guide_steps",
    "bilevel_steps",
    "temperature",
    "gamma_init",
    "lr",
    "batch_size",
)
#: settings whose default depends on the data (``None`` on the command line means "choose")
DATA_CHOSEN = ("latent_dim", "hidden", "gamma_init", "steps", "batch_size", "lr")


def data_defaults(data_dim, model="mlp", variance=None):
    r"""The data-chosen defaults for observations of flattened dimension ``data_dim``.

    :param int data_dim: :math:`d`.
    :param str model: ``"mlp"`` or ``"conv"``.
    :param float variance: mean per-dimension variance of the training data (sets the initial
        :math:`\gamma` of larger data; ``None``: 1).
    """
    if data_dim <= 4:
        return {
            "latent_dim": 2,
            "hidden": [30, 30],
            "gamma_init": 1.0,
            "steps": 2000,
            "batch_size": 200,
            "lr": 3e-3,
            "ais_points": 1000,
        }
    width = min(max(data_dim, 30), 512)
    return {
        "latent_dim": min(max(round(math.sqrt(data_dim)), 2), 32),
        "hidden": [32] if model == "conv" else [width, width],
        "gamma_init": 1.0 if variance is None else max(float(variance) / 10, 1e-6),
        "steps": 2000,
        "batch_size": 128,
        "lr": 1e-3,
        "ais_points": 100,
    }


def resolve_config(values, x_train):
    r"""A complete configuration dict: ``values`` with the data-chosen settings filled in.

    :param dict values: settings (``None`` for "choose from the data"); extra keys are dropped.
    :param x_train: the training data (its shape decides the defaults).
    """
    config = {k: values.get(k) for k in CONFIG_KEYS}
    data_dim = math.prod(x_train.shape[1:])
    variance = float(x_train.reshape(x_train.shape[0], -1).var(0).mean())
    defaults = data_defaults(data_dim, config.get("model") or "mlp", variance)
    for key in DATA_CHOSEN:
        if config.get(key) is None:
            config[key] = defaults[key]
    config["hidden"] = list(config["hidden"])
    config["image_shape"] = (
        list(image_shape(config["dataset"])) if image_shape(config["dataset"]) else None
    )
    return config


def evaluation_defaults(x):
    r"""``{"ais_points": ...}``: the data-chosen evaluation settings.

    :param x: data (its shape decides).
    """
    return {"ais_points": data_defaults(math.prod(x.shape[1:]))["ais_points"]}
