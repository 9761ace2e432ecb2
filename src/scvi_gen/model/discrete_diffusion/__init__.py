"""Absorbing-state discrete diffusion over binned expression (SEDD/MDLM-style)."""

from scvi_gen.nn._ema import EMACallback

from ._model import DiscreteDiffusion
from ._module import DiscreteDiffusionModule
from ._schedule import LogLinearSchedule, reverse_diffusion
from ._tokenizer import ExpressionTokenizer

__all__ = [
    "DiscreteDiffusion",
    "DiscreteDiffusionModule",
    "EMACallback",
    "ExpressionTokenizer",
    "LogLinearSchedule",
    "reverse_diffusion",
]
