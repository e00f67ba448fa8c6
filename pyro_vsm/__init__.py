"""pyro-vsm: variational score matching, energy-based priors and manifold priors for Pyro."""

from .infer import (
    AdversarialPriorLoss,
    ImportanceWeightedPriorLoss,
    JointFisherLoss,
    M1Loss,
    M2Loss,
    M3Loss,
    NonFiniteLossError,
    ScoreObjectiveError,
    SSMPriorLoss,
)

__version__ = "0.1.0"

__all__ = [
    "AdversarialPriorLoss",
    "ImportanceWeightedPriorLoss",
    "JointFisherLoss",
    "M1Loss",
    "M2Loss",
    "M3Loss",
    "NonFiniteLossError",
    "SSMPriorLoss",
    "ScoreObjectiveError",
    "__version__",
]
