"""Model families (one file each) and the registry. Importing this package registers every model."""

from . import mgiad, mgic, mgnet, poly_mgnet, resnet  # noqa: F401  (registration side effects)
from ._registry import ModelInfo, UnknownModelError, create_model, list_models, model_info, register_model
from .counting import count_parameters, round_thousands
from .mgic import MGIC
from .mgnet import MultigridNet
from .paper import ALL_ROWS, PaperRow, check_rows
from .resnet import CifarResNet

__all__ = [
    "ALL_ROWS",
    "MGIC",
    "CifarResNet",
    "ModelInfo",
    "MultigridNet",
    "PaperRow",
    "UnknownModelError",
    "check_rows",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
    "round_thousands",
]
