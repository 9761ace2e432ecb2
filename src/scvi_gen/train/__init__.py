"""Training plans and callbacks shared by scvi-gen generators."""

from ._plans import GeneratorTrainingPlan, checkpoint_stage

__all__ = ["GeneratorTrainingPlan", "checkpoint_stage"]
