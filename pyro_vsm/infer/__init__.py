r"""Losses that plug into :class:`pyro.infer.SVI`, their shared base and the score plumbing."""

from ..errors import NonFiniteLossError, ScoreObjectiveError
from .aae import AAELoss
from .adversarial_prior import AdversarialPriorLoss
from .base import ScoreLoss
from .beta_elbo import BetaELBO
from .energy_prior import EnergyPriorLoss, ImportanceWeightedPriorLoss, SSMPriorLoss
from .grouped import GroupedLoss, Objective
from .implicit import ImplicitELBO, ImplicitWAELoss
from .inference import check_inference, guide_objective_terms, inference_latent_mode
from .joint_fisher import JointFisherLoss
from .lagging import LaggingInferenceELBO
from .libi import LiBILoss
from .m1 import M1Loss
from .marginal import M2Loss, M3Loss
from .mvl import MVLLoss, MVLPriorLoss
from .schedules import (
    AlternatingSchedule,
    AnnealingSchedule,
    CyclicSchedule,
    LaggingSchedule,
    RoundsSchedule,
    Schedule,
    SinglePhase,
)
from .traces import trace_scores
from .vgh import VGHLoss
from .wae import MMDWAELoss

__all__ = [
    "AAELoss",
    "AdversarialPriorLoss",
    "AlternatingSchedule",
    "AnnealingSchedule",
    "BetaELBO",
    "CyclicSchedule",
    "EnergyPriorLoss",
    "GroupedLoss",
    "ImplicitELBO",
    "ImplicitWAELoss",
    "ImportanceWeightedPriorLoss",
    "JointFisherLoss",
    "LaggingInferenceELBO",
    "LaggingSchedule",
    "LiBILoss",
    "M1Loss",
    "M2Loss",
    "M3Loss",
    "MMDWAELoss",
    "MVLLoss",
    "MVLPriorLoss",
    "NonFiniteLossError",
    "Objective",
    "RoundsSchedule",
    "SSMPriorLoss",
    "Schedule",
    "ScoreLoss",
    "ScoreObjectiveError",
    "check_inference",
    "guide_objective_terms",
    "inference_latent_mode",
    "SinglePhase",
    "VGHLoss",
    "trace_scores",
]
