from ._model import MOEFlow

__all__ = ["MOEFlow"]
