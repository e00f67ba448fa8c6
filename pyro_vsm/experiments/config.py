r"""Run configurations of the command line: the settings that define a model, its data and its
objective, and the defaults chosen from the data.

Defaults chosen from the data (flattened dimension :math:`d` of one observation):

=============  ========================  ==========================================
setting        :math:`d \le 4` (2-D sets)  larger data (images, wide files)
=============  ========================  ==========================================
latent size    2                         :math:`\operatorname{clip}(\mathrm{round}(\sqrt d), 2, 32)` (digits: 8)
hidden widths  30, 30                    two layers of :math:`\operatorname{clip}(2d, 30, 512)` (digits: 128);
                                         ``--model conv``: conv width 32
steps          2000                      3000
batch size     200                       128
learning rate  3e-3                      1e-3
=============  ========================  ==========================================
"""

import math

from ..datasets.files import image_shape

__all__ = ["CONFIG_KEYS", "data_defaults", "resolve_config"]

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
    "lr",
    "batch_size",
)
#: settings whose default depends on the data (``None`` on the command line means "choose")
DATA_CHOSEN = ("latent_dim", "hidden", "steps", "batch_size", "lr")


def data_defaults(data_dim, model="mlp"):
    r"""The data-chosen defaults for observations of flattened dimension ``data_dim``.

    :param int data_dim: :math:`d`.
    :param str model: ``"mlp"`` or ``"conv"``.
    """
    if data_dim <= 4:
        return {"latent_dim": 2, "hidden": [30, 30], "steps": 2000, "batch_size": 200, "lr": 3e-3}
    width = min(max(2 * data_dim, 30), 512)
    return {
        "latent_dim": min(max(round(math.sqrt(data_dim)), 2), 32),
        "hidden": [32] if model == "conv" else [width, width],
        "steps": 3000,
        "batch_size": 128,
        "lr": 1e-3,
    }


def resolve_config(values, x_train):
    r"""A complete configuration dict: ``values`` with the data-chosen settings filled in.

    :param dict values: settings (``None`` for "choose from the data"); extra keys are dropped.
    :param x_train: the training data (its shape decides the defaults).
    """
    config = {k: values.get(k) for k in CONFIG_KEYS}
    data_dim = math.prod(x_train.shape[1:])
    for key, value in data_defaults(data_dim, config.get("model") or "mlp").items():
        if config.get(key) is None:
            config[key] = value
    config["hidden"] = list(config["hidden"])
    config["image_shape"] = (
        list(image_shape(config["dataset"])) if image_shape(config["dataset"]) else None
    )
    return config
