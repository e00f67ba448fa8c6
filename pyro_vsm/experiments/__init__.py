r"""Training and evaluating every objective on one data set: the core of ``pyro-vsm compare``,
``train`` and ``evaluate``, and of the ``compare_objectives`` example.

* :mod:`.registry`: the objective registry (:func:`register`, :class:`ObjectiveSpec`,
  :class:`Built`); :mod:`.families`, :mod:`.hybrid_families` and :mod:`.sphere_families`
  register the objectives of the library;
* :mod:`.config`: run configurations and the defaults chosen from the data;
* :mod:`.training`: training loops and thread settings; :mod:`.runner`: worker processes;
* :mod:`.evaluate`: the held-out metrics shared by every objective;
* :mod:`.report`, :mod:`.figures`, :mod:`.progress`: table, ``compare.png`` and progress lines;
* :mod:`.compare`: the ``compare`` command; :mod:`.vae`: the plain Gaussian VAE of the example.
"""

from . import families, hybrid_families, sphere_families  # noqa: F401 - register objectives
from .compare import resolve_losses, run_compare
from .config import CONFIG_KEYS, data_defaults, evaluation_defaults, resolve_config
from .evaluate import METRICS, evaluate_built
from .families import make_objective
from .registry import Built, ObjectiveSpec, get_objective, objective_names, register
from .training import auto_threads, num_threads, train_built, train_steps, train_vae
from .vae import build_vae, evaluate_vae, sample_vae

#: every registered objective name (the families of the library)
OBJECTIVE_NAMES = objective_names()

__all__ = [
    "Built",
    "CONFIG_KEYS",
    "METRICS",
    "OBJECTIVE_NAMES",
    "ObjectiveSpec",
    "auto_threads",
    "build_vae",
    "data_defaults",
    "evaluate_built",
    "evaluate_vae",
    "evaluation_defaults",
    "get_objective",
    "make_objective",
    "num_threads",
    "objective_names",
    "register",
    "resolve_config",
    "resolve_losses",
    "run_compare",
    "sample_vae",
    "train_built",
    "train_steps",
    "train_vae",
]
