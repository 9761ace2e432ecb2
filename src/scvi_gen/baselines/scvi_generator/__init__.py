from ._model import SCVIGenerator
from ._module import LabelPriorVAE

__all__ = ["LabelPriorVAE", "SCVIGenerator"]
