"""CFGen: count-aware flow matching with multi-attribute classifier-free guidance."""

from ._model import CFGen
from ._module import CFGenModule
from ._multimodal import MultimodalCFGen
from ._multimodal_module import ModalitySpec, MultimodalCFGenModule

__all__ = ["CFGen", "CFGenModule", "ModalitySpec", "MultimodalCFGen", "MultimodalCFGenModule"]
