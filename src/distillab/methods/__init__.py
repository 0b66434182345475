"""Objectives, one file per method. ``METHODS`` maps a config's ``name`` to its builder.

To add a method: write ``methods/<name>.py`` with a ``<Name>Config`` (pydantic, ``name`` literal)
and an :class:`Objective`, then register both below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field
from torch import nn

from distillab.methods.base import Objective, Teacher, soft_cross_entropy
from distillab.methods.born_again import BornAgain, BornAgainConfig, cwtm_weights, permute_non_argmax
from distillab.methods.fitnet import FitNetHint, FitNetHintConfig, FitNetKD, FitNetKDConfig, hint_loss
from distillab.methods.refinery import Refinery, RefineryConfig
from distillab.methods.kd import KD, KDConfig, kd_losses, soft_kl
from distillab.methods.supervised import Supervised, SupervisedConfig


class Context:
    """What builders may need besides the config and the student."""

    def __init__(self, load_teacher: Callable[[list[str]], Teacher], in_shape: tuple[int, ...]) -> None:
        self.load_teacher = load_teacher
        self.in_shape = in_shape


Builder = Callable[[Any, nn.Module, Context], Objective]

METHODS: dict[str, Builder] = {
    "supervised": lambda cfg, student, ctx: Supervised(student, cfg),
    "kd": lambda cfg, student, ctx: KD(student, ctx.load_teacher(cfg.teacher), cfg),
    "fitnet-hint": lambda cfg, student, ctx: FitNetHint(student, ctx.load_teacher(cfg.teacher), cfg, ctx.in_shape),
    "fitnet-kd": lambda cfg, student, ctx: FitNetKD(student, ctx.load_teacher(cfg.teacher), cfg),
    "born-again": lambda cfg, student, ctx: BornAgain(student, ctx.load_teacher(cfg.teacher), cfg),
    "refinery": lambda cfg, student, ctx: Refinery(student, ctx.load_teacher(cfg.teacher), cfg),
}

MethodConfig = Annotated[Union[SupervisedConfig, KDConfig, FitNetHintConfig, FitNetKDConfig, BornAgainConfig,
                               RefineryConfig], Field(discriminator="name")]


def build_objective(cfg: Any, student: nn.Module, ctx: Context) -> Objective:
    """Build the objective named by ``cfg.name``."""
    return METHODS[cfg.name](cfg, student, ctx)


__all__ = ["BornAgain", "BornAgainConfig", "Refinery", "RefineryConfig", "cwtm_weights", "permute_non_argmax",
           "soft_cross_entropy", "Context", "FitNetHint", "FitNetHintConfig", "FitNetKD", "FitNetKDConfig", "hint_loss", "KD", "KDConfig", "METHODS", "MethodConfig", "Objective", "Supervised", "SupervisedConfig",
           "Teacher", "build_objective", "kd_losses", "soft_kl"]
