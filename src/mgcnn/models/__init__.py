"""Model families (one file each) and the registry. Importing this package registers every model.

Pure architecture: the papers' tables, their weight-count check and the built-in studies are in ``mgcnn.papers``.
"""

from . import mgiad, mgic, mgnet, poly_mgnet, resnet  # noqa: F401  (registration side effects)
from ._base import FeatureExtractor, ImageClassifier
from ._registry import (
    ModelInfo,
    UnknownModelError,
    as_features,
    create_model,
    list_models,
    model_info,
    register_model,
)
from .counting import ModelRow, count_parameters, model_table, round_thousands
from .mgic import MGIC
from .mgnet import MultigridNet
from .resnet import CifarResNet

__all__ = [
    "MGIC",
    "CifarResNet",
    "FeatureExtractor",
    "ImageClassifier",
    "ModelInfo",
    "ModelRow",
    "MultigridNet",
    "UnknownModelError",
    "as_features",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
    "model_table",
    "register_model",
    "round_thousands",
]
