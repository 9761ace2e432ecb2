"""CFGen: count-aware flow matching with multi-attribute classifier-free guidance."""

from ._model import CFGen
from ._module import CFGenModule
from ._multimodal_module import ModalitySpec, MultimodalCFGenModule
from ._sweep import guidance_sweep

__all__ = ["CFGen", "CFGenModule", "ModalitySpec", "MultimodalCFGenModule", "guidance_sweep"]
