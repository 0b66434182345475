"""Objectives, one file per method. ``METHODS`` maps a config's ``name`` to its builder.

To add a method: write ``methods/<name>.py`` with a ``<Name>Config`` (pydantic, ``name`` literal)
and an :class:`Objective`, then register both below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field
from torch import nn

from distillab.methods.base import Objective, Teacher
from distillab.methods.kd import KD, KDConfig, kd_losses, soft_kl
from distillab.methods.supervised import Supervised, SupervisedConfig

# A builder gets the method config, the student, and a function that loads teacher run dirs.
Builder = Callable[[Any, nn.Module, Callable[[list[str]], Teacher]], Objective]

METHODS: dict[str, Builder] = {
    "supervised": lambda cfg, student, load_teacher: Supervised(student, cfg),
    "kd": lambda cfg, student, load_teacher: KD(student, load_teacher(cfg.teacher), cfg),
}

MethodConfig = Annotated[Union[SupervisedConfig, KDConfig], Field(discriminator="name")]


def build_objective(cfg: Any, student: nn.Module, load_teacher: Callable[[list[str]], Teacher]) -> Objective:
    """Build the objective named by ``cfg.name``."""
    return METHODS[cfg.name](cfg, student, load_teacher)


__all__ = ["KD", "KDConfig", "METHODS", "MethodConfig", "Objective", "Supervised", "SupervisedConfig",
           "Teacher", "build_objective", "kd_losses", "soft_kl"]
