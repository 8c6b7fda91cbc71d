"""mgcnn: multigrid-inspired convolutional networks (ResNet, MgNet, MGIC, MGiaD, Poly-MgNet) in PyTorch."""

__version__ = "0.2.0"

from .hub import load_model, transforms_for  # noqa: E402
from .models import (  # noqa: E402
    UnknownModelError,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "UnknownModelError",
    "__version__",
    "count_parameters",
    "create_model",
    "list_models",
    "load_model",
    "model_info",
    "register_model",
    "transforms_for",
]
