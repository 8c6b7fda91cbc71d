"""mgcnn: multigrid-inspired convolutional networks (ResNet, MgNet, MGIC, MGiaD, Poly-MgNet) in PyTorch."""

from .models import (
    UnknownModelError,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "UnknownModelError",
    "__version__",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
