r"""The objective registry of ``pyro-vsm compare``/``train``/``evaluate``.

Every objective (a *family*: model + guide + loss + how to evaluate it) joins with one
:func:`register` call that names a small builder. A builder takes the resolved run
configuration (:class:`~pyro_vsm.experiments.config.RunConfig`) and the training data, and
returns a :class:`Built`: the Pyro model and guide its paper needs, the loss, the optimiser, the
number of ``svi.step`` calls, and the evaluation hooks (how to draw exact prior latents, whether
the prior is normalised, which held-out metrics do not apply and why). Evaluation
(:mod:`~pyro_vsm.experiments.evaluate`) only talks to these hooks, so a new family (MVL priors,
sphere latents, adversarial hybrids, ...) needs no change outside its builder.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["Built", "ObjectiveSpec", "get_objective", "objective_names", "register"]


@dataclass(frozen=True)
class ObjectiveSpec:
    r"""One registered objective.

    :param str name: the command-line name (``--losses``, ``--loss``).
    :param build: ``build(config, x_train) -> Built``.
    :param str family: a short family label (``"score matching"``, ``"energy prior"``, ...).
    :param str summary: what it trains, one line.
    :param str paper: the paper and equations it implements.
    :param tuple latents: the ``--latent`` kinds it supports.
    :param tuple models: the ``--model`` kinds it supports.
    :param float cost: its relative cost (``compare`` starts the most expensive first).
    """

    name: str
    build: Callable
    family: str
    summary: str
    paper: str
    latents: tuple = ("gaussian",)
    models: tuple = ("mlp", "conv")
    cost: float = 1.0


_REGISTRY = {}


def register(spec):
    r"""Adds an :class:`ObjectiveSpec` (a name may be registered once).

    :param ObjectiveSpec spec: the objective.
    """
    if not isinstance(spec, ObjectiveSpec):
        raise TypeError(f"register takes an ObjectiveSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(f"objective {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def objective_names(latent=None, model=None):
    r"""The registered names, in registration order (those supporting ``latent``/``model``).

    :param str latent: a ``--latent`` kind, or ``None`` for all.
    :param str model: a ``--model`` kind, or ``None`` for all.
    """
    return tuple(
        name
        for name, spec in _REGISTRY.items()
        if (latent is None or latent in spec.latents) and (model is None or model in spec.models)
    )


def get_objective(name):
    r"""The :class:`ObjectiveSpec` of ``name`` (``ValueError`` naming the choices otherwise).

    :param str name: a registered name.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown loss {name!r}; choose from {', '.join(_REGISTRY)} (or 'all')"
        ) from None


@dataclass
class Built:
    r"""What a builder returns: the objects to train and the hooks to evaluate them.

    :param model: the Pyro model, called as ``model(x, num_data=None)``.
    :param guide: its guide, same signature.
    :param loss: the ``pyro.infer.ELBO`` to train with.
    :param optim: the ``pyro.optim`` optimiser.
    :param int steps: the ``svi.step`` calls to take.
    :param prior_latents: ``n -> z``, ``n`` exact draws from the prior (evaluation mode).
    :param decode: ``z -> mean of p(x|z)`` (images: the decoded means shown in figures).
    :param observe: ``mean -> draw of x`` (adds the observation noise).
    :param log_z: ``() -> (log Z, exact)`` for an unnormalised (energy) prior, else ``None``.
    :param str ais_start: ``"prior"`` (AIS from :math:`p(z)`) or ``"guide"`` (for priors that
        cannot be sampled exactly).
    :param dict not_applicable: ``{metric: reason}`` for metrics that do not apply.
    :param dict settings: the family's own settings, recorded in the report.
    :param evaluation: a context manager factory that puts model and guide in evaluation mode
        (e.g. discrete latents), or ``None``.
    :param int steps_per_batch: consecutive ``svi.step`` calls on one minibatch (a cycle of a
        loss with one parameter group per step).
    """

    model: object
    guide: object
    loss: object
    optim: object
    steps: int
    prior_latents: Callable
    decode: Callable
    observe: Callable
    log_z: Callable = None
    ais_start: str = "prior"
    not_applicable: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    evaluation: Callable = None
    steps_per_batch: int = 1

    def evaluation_mode(self):
        r"""The context in which held-out metrics are computed."""
        return self.evaluation() if self.evaluation is not None else contextlib.nullcontext()

    @torch.no_grad()
    def sample(self, num_samples):
        r"""``(means, draws)``: decoded means and observation draws for ``num_samples`` exact
        prior latents (call inside :meth:`evaluation_mode`).

        :param int num_samples: the number of draws.
        """
        means = self.decode(self.prior_latents(num_samples))
        return means, self.observe(means)
