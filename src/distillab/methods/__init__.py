"""Objectives, one file per method, each registered with ``@register_method(ItsConfig)``.

To add a method: write ``methods/<name>.py`` with a ``<Name>Config`` (pydantic, ``name`` literal)
and an :class:`Objective` subclass decorated with ``@register_method(<Name>Config)``. This package
imports every module in it, so nothing else needs editing; ``MethodConfig`` (the discriminated
union a config's ``method:`` key is validated against) is built from the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Union

from pydantic import Field

from distillab.methods.base import Objective, Teacher, soft_cross_entropy
from distillab.methods.registry import METHODS, Context, build_objective, register_method

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_mod.name}")

# Re-export each registered objective and config class (``from distillab.methods import KD, KDConfig``).
for _entry in METHODS.values():
    globals()[_entry.objective.__name__] = _entry.objective
    globals()[_entry.config.__name__] = _entry.config

MethodConfig = Annotated[Union[tuple(e.config for e in METHODS.values())],  # type: ignore[misc]
                         Field(discriminator="name")]

__all__ = ["Context", "METHODS", "MethodConfig", "Objective", "Teacher", "build_objective", "register_method",
           "soft_cross_entropy", *(e.objective.__name__ for e in METHODS.values()),
           *(e.config.__name__ for e in METHODS.values())]
