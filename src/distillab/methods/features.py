"""Feature taps shared by the feature-based methods (AT, SP, PKT, RKD, CRD, ReviewKD).

Taps are addressed by *block index* (``model.blocks``), so one method works with the zoo's own
nets, timm and torchvision models alike. ``auto_pairs`` pairs student and teacher blocks the way
RepDistiller pairs stage outputs: for every spatial size both networks produce, the last block
of that size in each.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.errors import UserError
from distillab.models.blocks import taps_of, tap_features, use_layers


def layers_field(role: str) -> Any:
    """``student_layers`` / ``teacher_layers``: taps by module path, for any ``nn.Module``."""
    return Field(None, min_length=1, description=f"{role} layers to tap, by module path (e.g. [features.3, "
                 f"features.6]); unset: the model's blocks, or for a plain module its leaf layers in call order")


def prepare_taps(model: nn.Module, in_shape: Sequence[int], layers: Sequence[str] | None, role: str) -> int:
    """Choose ``model``'s taps (named ``layers``, else its own blocks or the automatic ones, found
    now with a probe input of ``in_shape``); return how many there are."""
    use_layers(model, layers, role)
    if layers is not None or hasattr(model, "tap_modules"):
        return len(taps_of(model))
    device = next(iter(model.parameters()), torch.zeros(())).device
    return len(taps_of(model, torch.zeros(2, *in_shape, device=device)))


def named_pairs(n_student: int, n_teacher: int, cfg: Any) -> list[tuple[int, int]] | None:
    """Pairs for ``student_layers`` + ``teacher_layers`` both named: the i-th with the i-th."""
    s, t = getattr(cfg, "student_layers", None), getattr(cfg, "teacher_layers", None)
    if s is None or t is None:
        return None  # unnamed side(s): paired automatically by feature size
    if len(s) != len(t):
        raise UserError(f"{cfg.name}: student_layers names {len(s)} layers, teacher_layers {len(t)}; name as many "
                        f"of each (the i-th is matched with the i-th), or name one side to pair it by feature size")
    return [(i, i) for i in range(len(s))]


@torch.no_grad()
def block_shapes(model: nn.Module, in_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Output shape (without batch) of every block of ``model`` for inputs of ``in_shape``."""
    x0 = torch.zeros(2, *in_shape, device=next(model.parameters()).device)
    n = len(taps_of(model, x0))
    was = model.training
    model.eval()
    try:
        x = torch.zeros(2, *in_shape, device=next(model.parameters()).device)
        _, feats = tap_features(model, x, list(range(n)))
    finally:
        model.train(was)
    return [tuple(f.shape[1:]) for f in feats]


def auto_pairs(student: nn.Module, teacher: nn.Module, in_shape: Sequence[int],
               max_pairs: int | None = None) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs: for each spatial size both produce, the last block of
    that size in each network, input side first. Flat (2-D) features pair their last blocks."""
    s_shapes, t_shapes = block_shapes(student, in_shape), block_shapes(teacher, in_shape)

    def last_of_each_size(shapes: list[tuple[int, ...]]) -> dict[tuple[int, ...], int]:
        out: dict[tuple[int, ...], int] = {}
        for i, s in enumerate(shapes):
            out[s[1:] if len(s) == 3 else ()] = i  # later blocks of the same size win
        return out

    s_last, t_last = last_of_each_size(s_shapes), last_of_each_size(t_shapes)
    pairs = sorted((s_last[k], t_last[k]) for k in s_last.keys() & t_last.keys())
    if not pairs:
        raise UserError("no student and teacher blocks share a feature size; list the block pairs explicitly")
    return pairs[-max_pairs:] if max_pairs else pairs


def check_pairs(pairs: Sequence[Sequence[int]], student: nn.Module, teacher: nn.Module) -> list[tuple[int, int]]:
    """Validate explicit ``[[student_block, teacher_block], ...]`` pairs; one-line errors."""
    ns, nt = len(taps_of(student)), len(taps_of(teacher))
    out = []
    for p in pairs:
        if len(p) != 2:
            raise UserError(f"block pair {list(p)} must be [student_block, teacher_block]")
        s, t = int(p[0]), int(p[1])
        if not (-ns <= s < ns and -nt <= t < nt):
            raise UserError(f"block pair {[s, t]} out of range: student has {ns} blocks, teacher {nt}")
        out.append((s % ns, t % nt))
    return out


def pooled(feature: torch.Tensor) -> torch.Tensor:
    """A (B, D) embedding of a block output: global average pool for maps, identity for vectors."""
    if feature.ndim == 4:
        return F.adaptive_avg_pool2d(feature, 1).flatten(1)
    return feature.flatten(1)


def penultimate_index(model: nn.Module) -> int:
    """Index of the last block: its (pooled) output is what the head sees."""
    return len(taps_of(model)) - 1


def student_teacher_features(student: nn.Module, teacher: nn.Module, x: torch.Tensor,
                             s_idx: Sequence[int], t_idx: Sequence[int]
                             ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Student logits and block outputs (with grad), teacher logits and block outputs (no grad)."""
    z_s, f_s = tap_features(student, x, list(s_idx))
    with torch.no_grad():
        z_t, f_t = tap_features(teacher, x, list(t_idx))
    return z_s, f_s, z_t.detach(), [f.detach() for f in f_t]


F_ = TypeVar("F_", bound=Callable[..., Any])


def fp32(fn: F_) -> F_:
    """Run a loss helper in fp32 even inside ``train.precision: bf16`` autocast: autocast would
    otherwise run its matrix products (Gram matrices, pairwise distances, contrast scores) in
    bfloat16, whose 8-bit mantissa wrecks differences of nearby values. Tensor arguments are
    cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        kwargs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()}
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
