"""mgcnn: multigrid-inspired convolutional networks (ResNet, MgNet, MGIC, MGiaD, Poly-MgNet) in PyTorch."""

from ._version import __version__
from .checkpoint import load_model
from .hub import transforms_for
from .models import UnknownModelError, count_parameters, list_models, model_info, register_model
from .zoo import create_model, list_pretrained

__all__ = [
    "UnknownModelError",
    "__version__",
    "count_parameters",
    "create_model",
    "list_models",
    "list_pretrained",
    "load_model",
    "model_info",
    "register_model",
    "transforms_for",
]
