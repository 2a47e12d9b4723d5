"""The model registry. Importing this package registers every model module listed here."""

from cnnlab.models import study000, study002, study003, study004, transfer  # noqa: F401  (registers)
from cnnlab.models.registry import MODELS, accepts_weights, build_model, count_params, register

__all__ = ["MODELS", "accepts_weights", "build_model", "count_params", "register"]
