r"""pyro-vsm: variational score matching, energy-based priors and manifold priors for Pyro."""

from .infer import (
    AAELoss,
    AdversarialPriorLoss,
    BetaELBO,
    GroupedLoss,
    ImportanceWeightedPriorLoss,
    JointFisherLoss,
    LaggingInferenceELBO,
    LiBILoss,
    M1Loss,
    M2Loss,
    M3Loss,
    MVLLoss,
    MVLPriorLoss,
    NonFiniteLossError,
    ScoreObjectiveError,
    SSMPriorLoss,
    VGHLoss,
)

__version__ = "0.1.0"

__all__ = [
    "AAELoss",
    "AdversarialPriorLoss",
    "BetaELBO",
    "GroupedLoss",
    "ImportanceWeightedPriorLoss",
    "JointFisherLoss",
    "LaggingInferenceELBO",
    "LiBILoss",
    "M1Loss",
    "M2Loss",
    "M3Loss",
    "MVLLoss",
    "MVLPriorLoss",
    "NonFiniteLossError",
    "SSMPriorLoss",
    "ScoreObjectiveError",
    "VGHLoss",
    "__version__",
]
