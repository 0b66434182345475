"""Recipe registry: ``@register_recipe(ItsConfig)`` on a study's ``run(cfg, out, study)`` makes it
runnable as ``recipe: <name>`` in a YAML config, the name being the default of the config's
``recipe`` Literal (one spelling, as ``register_method`` reads a method config's ``name``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from distillab.registry import Registry

RunFn = TypeVar("RunFn", bound=Callable[..., str])


@dataclass(frozen=True)
class RecipeEntry:
    """A registered study: its config class, its ``run`` and the module defining them."""

    name: str
    config: type
    run: Callable[[Any, Path, Any], str]
    module: ModuleType
    help: str


RECIPES: Registry[RecipeEntry] = Registry("recipe", "; `distillab list recipes` describes them")


def register_recipe(config: type) -> Callable[[RunFn], RunFn]:
    """Decorator on ``run(cfg, out, study) -> str`` (the results Markdown): registers the study under
    the default of ``config``'s ``recipe`` field. Its help line is the module docstring's first
    paragraph (else the function's)."""
    field = getattr(config, "model_fields", {}).get("recipe")
    name = getattr(field, "default", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{config.__name__}: a recipe config needs a `recipe: Literal[\"name\"] = \"name\"` field")

    def deco(run: RunFn) -> RunFn:
        module = sys.modules[run.__module__]
        doc = module.__doc__ if module.__doc__ and module.__name__ != "__main__" else run.__doc__
        RECIPES.add(name, RecipeEntry(name, config, run, module, _summary(doc)), run.__module__)
        return run

    return deco


def _summary(doc: str | None, limit: int = 110) -> str:
    """The first paragraph of a docstring, shortened, without a leading "Recipe ``name``:" tag."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = text.split(": ", 1)[1] if text.startswith("Recipe ``") and ": " in text else text
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
