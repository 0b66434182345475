"""distillab: transfer learning and knowledge distillation lab for PyTorch."""

from distillab.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
