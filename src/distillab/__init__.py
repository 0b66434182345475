"""distillab: transfer learning and knowledge distillation lab for PyTorch.

Python API (see ``examples/``): :func:`distill`, :func:`train`, :func:`evaluate`,
:func:`run_study`, :func:`create_model`, :func:`register_model`, :func:`register_method`,
:func:`register_source`, :func:`register_recipe`,
:class:`Teacher`, :class:`Batch` (transfer surgery: :mod:`distillab.transfer`). Heavy modules load on
first use, so ``import distillab`` is cheap.
"""

from __future__ import annotations

from typing import Any

from distillab.errors import UserError

__version__ = "0.1.0"

_LAZY = {
    "distill": "distillab.api", "train": "distillab.api", "evaluate": "distillab.api", "FitResult": "distillab.api",
    "load": "distillab.api", "BlockNet": "distillab.models.blocks",
    "create_model": "distillab.models", "register_model": "distillab.models",
    "register_method": "distillab.methods", "register_source": "distillab.data", "register_recipe": "distillab.recipes",
    "Teacher": "distillab.methods", "Objective": "distillab.methods",
    "Batch": "distillab.data.batch", "Trainer": "distillab.engine.trainer", "run_study": "distillab.api",
}
__all__ = ["UserError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distillab' has no attribute {name!r}")
