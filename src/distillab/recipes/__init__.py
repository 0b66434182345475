"""Recipes: one module per study, each a config class and a ``run`` registered with
``@register_recipe(ItsConfig)``; this package imports every module in it, so a new study is one
new file. ``RECIPES`` maps the ``recipe:`` key of a YAML config to its entry; ``plan.py`` reads a
recipe's runs off the recipe itself (how many, in which order, which depends on which)."""

from __future__ import annotations

from distillab.recipes.registry import RECIPES, RecipeEntry, register_recipe
from distillab.registry import import_submodules

# Helpers that are not studies (study.py, plan.py, preconditions.py, tuning.py) register nothing.
import_submodules(__name__, __path__, skip=("registry",))

__all__ = ["RECIPES", "RecipeEntry", "register_recipe"]
