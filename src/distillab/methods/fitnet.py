"""FitNets (Romero et al. 2015): hint-based training of a thin, deep student.

Stage 1 (``fitnet-hint``): a regressor r maps the student's *guided* block output onto the
teacher's *hint* block output; the student up to the guided block and r minimise
L_HT = ½‖u_h(x) − r(v_g(x))‖² (summed over features, averaged over the batch).
Stage 2 (``fitnet-kd``): the whole student, started from stage 1, minimises
H(y, P_S) + λ·H(P_T^τ, P_S^τ) with τ = 3 and λ annealed linearly from 4 to 1.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.errors import UserError
from distillab.methods.registry import Context, register_method
from distillab.methods.base import Objective, Teacher, teacher_field, soft_cross_entropy
from distillab.models import forward_to_block


class FitNetHintConfig(Strict):
    # Said beside the run's accuracy: a stage-1 student is never trained to classify.
    accuracy_note: ClassVar[str] = ("stage 1 trains only the blocks up to the guided layer and a regressor, not the "
                                    "classifier: chance-level accuracy is expected")
    name: Literal["fitnet-hint"] = "fitnet-hint"
    teacher: list[str] = teacher_field(max_length=1)
    hint: int = Field(description="teacher block index whose output is the hint")
    guided: int = Field(description="student block index guided by the hint")
    regressor: Literal["auto", "1x1"] = Field("auto", description="auto: conv with kernel H_g - H_h + 1 (1x1 if equal)")


class FitNetKDConfig(Strict):
    name: Literal["fitnet-kd"] = "fitnet-kd"
    teacher: list[str] = teacher_field()
    temperature: float = Field(3.0, gt=0)
    lambda_start: float = 4.0
    lambda_end: float = 1.0


def hint_loss(hint: torch.Tensor, guess: torch.Tensor) -> torch.Tensor:
    """½‖u − r‖², summed over features and averaged over the batch."""
    return 0.5 * (hint.float() - guess.float()).pow(2).flatten(1).sum(1).mean()


def build_regressor(guided: torch.Tensor, hint: torch.Tensor, kind: str = "auto") -> nn.Module:
    """A regressor from guided-layer features to hint-layer features, ending in ReLU (the hint
    layer's non-linearity in this zoo). Conv features: kernel N_g − N_h + 1 so sizes match."""
    if guided.ndim == 2 and hint.ndim == 2:
        return nn.Sequential(nn.Linear(guided.shape[1], hint.shape[1]), nn.ReLU())
    if guided.ndim == 4 and hint.ndim == 4:
        ng, nh = guided.shape[-1], hint.shape[-1]
        if guided.shape[-2] - hint.shape[-2] != ng - nh or ng < nh or (kind == "1x1" and ng != nh):
            raise UserError(f"fitnet: a conv regressor cannot map guided features {tuple(guided.shape[1:])} to "
                            f"hint features {tuple(hint.shape[1:])}; choose blocks whose maps are as large or larger")
        return nn.Sequential(nn.Conv2d(guided.shape[1], hint.shape[1], ng - nh + 1), nn.ReLU())
    raise UserError(f"fitnet: cannot regress guided features of shape {tuple(guided.shape[1:])} onto hint "
                    f"features of shape {tuple(hint.shape[1:])} (conv vs flat)")


@register_method(FitNetHintConfig)
class FitNetHint(Objective):
    """Stage 1: only the student's blocks up to ``guided`` and the regressor get gradients."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: FitNetHintConfig, in_shape: tuple[int, ...]) -> None:
        super().__init__(student, teacher)
        self.hint, self.guided = cfg.hint, cfg.guided
        x = torch.zeros(2, *in_shape, device=next(student.parameters()).device)
        with torch.no_grad():
            was = student.training
            student.eval()
            g = forward_to_block(student, x, cfg.guided)
            student.train(was)
            h = forward_to_block(teacher.single("fitnet-hint", "its hint layer is matched"), x, cfg.hint)
        self.regressor = build_regressor(g, h, cfg.regressor).to(x.device)

    @classmethod
    def from_config(cls, cfg: FitNetHintConfig, student: nn.Module, ctx: Context) -> "FitNetHint":
        return cls(student, ctx.teacher(cfg), cfg, ctx.in_shape)

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x = batch.x
        with torch.no_grad():
            u = forward_to_block(self.teacher.single(), x, self.hint)
        return {"hint": hint_loss(u, self.regressor(forward_to_block(self.student, x, self.guided)))}

    def saved_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "regressor": self.regressor}


@register_method(FitNetKDConfig)
class FitNetKD(Objective):
    """Stage 2: labels plus λ-weighted soft cross-entropy at temperature τ, λ annealed."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: FitNetKDConfig) -> None:
        super().__init__(student, teacher)
        self.cfg = cfg

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        x, y = batch.x, batch.y
        c = self.cfg
        lam = c.lambda_start + (c.lambda_end - c.lambda_start) * progress
        p_t = self.teacher.soft_targets(batch, c.temperature)
        z = self.student(x)
        return {"ce": F.cross_entropy(z, y), "soft": lam * soft_cross_entropy(z / c.temperature, p_t)}
