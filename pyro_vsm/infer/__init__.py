"""Losses that plug into :class:`pyro.infer.SVI`, and the score plumbing behind them."""

from .base import ScoreLoss
from .energy_prior import AdversarialPriorLoss, ImportanceWeightedPriorLoss, SSMPriorLoss
from .joint_fisher import JointFisherLoss
from .libi import BetaELBO, LaggingInferenceELBO, LiBILoss
from .m1 import M1Loss
from .marginal import M2Loss, M3Loss
from .schedule import AlternatingSchedule
from .scores import score_and_laplacian
from .tracing import NonFiniteLossError, ScoreObjectiveError, trace_scores

__all__ = [
    "AdversarialPriorLoss",
    "AlternatingSchedule",
    "BetaELBO",
    "ImportanceWeightedPriorLoss",
    "JointFisherLoss",
    "LaggingInferenceELBO",
    "LiBILoss",
    "M1Loss",
    "M2Loss",
    "M3Loss",
    "NonFiniteLossError",
    "SSMPriorLoss",
    "ScoreLoss",
    "ScoreObjectiveError",
    "score_and_laplacian",
    "trace_scores",
]
