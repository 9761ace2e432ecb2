"""LatentDiffusion: scLDM-style latent diffusion with a set-attention autoencoder and a DiT prior."""

from ._model import LatentDiffusion
from ._module import LatentDiffusionModule
from ._prior import LatentDiT

__all__ = ["LatentDiT", "LatentDiffusion", "LatentDiffusionModule"]
