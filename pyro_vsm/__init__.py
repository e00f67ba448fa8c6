"""pyro-vsm: variational score matching, energy-based priors and manifold priors for Pyro."""

from .infer import (
    JointFisherLoss,
    M1Loss,
    M2Loss,
    M3Loss,
    NonFiniteLossError,
    ScoreObjectiveError,
)

__version__ = "0.1.0"

__all__ = [
    "JointFisherLoss",
    "M1Loss",
    "M2Loss",
    "M3Loss",
    "NonFiniteLossError",
    "ScoreObjectiveError",
    "__version__",
]
