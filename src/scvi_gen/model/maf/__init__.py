from ._model import MAFFlow

__all__ = ["MAFFlow"]
