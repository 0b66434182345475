"""Objectives, one file per method, each registered with ``@register_method(ItsConfig)``.

To add a method: write ``methods/<name>.py`` with a ``<Name>Config`` (pydantic, ``name`` literal)
and an :class:`Objective` subclass decorated with ``@register_method(<Name>Config)``. This package
imports every module in it, so nothing else needs editing; ``MethodConfig`` (the type of a
config's ``method:`` key) validates against the registry when a config is read.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainSerializer, PlainValidator, ValidationError
from pydantic_core import PydanticCustomError

from distillab.methods.base import BaseTeacher, Objective, Teacher, soft_cross_entropy
from distillab.methods.registry import METHODS, Context, build_objective, register_method

from distillab.registry import import_submodules

import_submodules(__name__, __path__, skip=("base", "registry"))

# Re-export each registered objective and config class (``from distillab.methods import KD, KDConfig``).
for _entry in METHODS.values():
    globals()[_entry.objective.__name__] = _entry.objective
    globals()[_entry.config.__name__] = _entry.config

def _validate_method(value: Any) -> Any:
    """Validate a ``method:`` mapping against the config of the method it names, looked up in the
    registry *when the config is read* — so a method registered later (``--import mypkg``) can be
    named in YAML like a built-in one."""
    if isinstance(value, BaseModel) and any(type(value) is e.config for e in METHODS.values()):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("method_type", "must be a mapping with a 'name' key")
    name = value.get("name", "supervised")
    entry = METHODS.get(name) if isinstance(name, str) else None
    if entry is None:
        from distillab.errors import did_you_mean

        raise PydanticCustomError(
            "method_name",
            "unknown method {name}{hint} (known: {known})",
            {"name": repr(name), "known": ", ".join(METHODS), "hint": did_you_mean(name, METHODS)},
        )
    try:
        return entry.config.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        if first["type"] == "extra_forbidden":
            from distillab.errors import did_you_mean

            msg += did_you_mean(str(first["loc"][-1]), entry.config.model_fields)
        got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) \
            and first["type"] != "extra_forbidden" else ""
        raise PydanticCustomError("method_invalid", "{name}.{loc}: {msg}{got}",
                                  {"name": name, "loc": loc, "msg": msg, "got": got}) from None


MethodConfig = Annotated[Any, PlainValidator(_validate_method),
                         PlainSerializer(lambda v: v.model_dump(mode="json"), return_type=dict),
                         Field(description="a method's config; `name` picks the method (distillab list methods)")]

__all__ = [
    "BaseTeacher",
    "Context",
    "METHODS",
    "MethodConfig",
    "Objective",
    "Teacher",
    "build_objective",
    "register_method",
    "soft_cross_entropy",
    *(e.objective.__name__ for e in METHODS.values()),
    *(e.config.__name__ for e in METHODS.values()),
]
