"""Training plans, the shared train runner and callbacks of scvi-gen generators."""

from ._plans import DistributedMetricsTrainingPlan, GeneratorTrainingPlan, checkpoint_stage
from ._runner import GeneratorTrainRunner, StageProgressBar, stage_label

__all__ = [
    "DistributedMetricsTrainingPlan",
    "GeneratorTrainRunner",
    "GeneratorTrainingPlan",
    "StageProgressBar",
    "checkpoint_stage",
    "stage_label",
]
