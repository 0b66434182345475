"""CRD — Contrastive Representation Distillation (Tian, Krishnan, Isola, ICLR 2020).

Embeddings v_s = normalize(W_s·f_s), v_t = normalize(W_t·f_t) (Linear(d, 128) on the pooled
penultimate features) are contrasted against momentum memories M_s, M_t of every training
example's past embeddings. For example b, column 0 of ``idx[b]`` is its own index (the positive)
and columns 1..K are K negatives; with temperature T and constants Z_s, Z_t:

    x_s[b, k] = exp(<M_t[idx[b, k]], v_s[b]> / T) / Z_s        x_t[b, k] = exp(<M_s[idx[b, k]], v_t[b]> / T) / Z_t
    h(x, k) = log(x_b0 / (x_b0 + K/N + ε)) + Σ_{k≥1} log((K/N) / (x_bk + K/N + ε)),     ε = 1e-7
    L_CRD = −(1/B) Σ_b [h(x_s) + h(x_t)]        L = CE + 0.8·L_CRD (+ kd_weight·T²·KL for CRD+KD)

followed by M[idx_b] ← normalize(m·M[idx_b] + (1 − m)·v_b), m = 0.5 (N = training-set size).
Follows RepDistiller (``crd/criterion.py``, ``crd/memory.py``): memories uniform in ±1/√(128/3),
Z = mean(exp(scores / T))·N taken once from the first batch and then frozen. Here Z lives in a buffer
(−1 = not yet set) next to the memories, so a checkpoint holds all of it and resume is bit-identical.
Negatives ('exact' mode): K indices uniform without replacement among the N − 1 *other* examples,
drawn with the global torch RNG (seeded per epoch by the trainer). Departure: the official sampler
excludes every example of the anchor's class, which needs a label table the context does not carry;
we exclude only the example itself (with 100 classes, ~1% of candidates differ). K is clamped to
N − 1 for small training sets. Scores are gathered from v·Mᵀ (B × N) rather than a (B, K+1, 128)
copy of memory rows: the same numbers, less memory traffic.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from distillab.config import Strict
from distillab.data.batch import Batch
from distillab.errors import UserError
from distillab.methods.base import Objective, Teacher, teacher_field
from distillab.methods.features import layers_field, block_shapes, penultimate_index, pooled, student_teacher_features
from distillab.methods.kd import soft_kl
from distillab.methods.registry import Context, register_method


class CRDConfig(Strict):
    name: Literal["crd"] = "crd"
    teacher: list[str] = teacher_field(max_length=1)
    student_layers: list[str] | None = layers_field("student")
    teacher_layers: list[str] | None = layers_field("teacher")
    feat_dim: int = Field(128, gt=0, description="embedding size of both heads and memories")
    nce_k: int = Field(16384, gt=0, description="negatives per example (clamped to num_train − 1)")
    temperature: float = Field(0.07, gt=0, description="NCE temperature T")
    momentum: float = Field(0.5, ge=0, lt=1, description="memory momentum m")
    weight: float = Field(0.8, ge=0, description="weight of L_CRD")
    ce_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy on labels")
    kd_weight: float = Field(0.0, ge=0, description="weight of Hinton KD (1 for the CRD+KD row)")
    kd_temperature: float = Field(4.0, gt=0, description="temperature of the optional KD term")


def sample_negatives(index: torch.Tensor, num_train: int, k: int) -> torch.Tensor:
    """(B, k) indices, per row uniform without replacement from [0, N) minus that row's ``index``."""
    r = torch.rand(index.shape[0], num_train - 1, device=index.device).topk(k, dim=1).indices
    return r + (r >= index[:, None]).long()  # skip the own index: [0, N−2] → [0, N) \ {index}


def contrast_scores(anchor: torch.Tensor, memory: torch.Tensor, idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """exp(<memory[idx[b, k]], anchor[b]> / T), shape (B, K+1); memory rows carry no gradient.
    The memory is copied: backward needs it as it was, and the update changes it in place."""
    return torch.exp((anchor.float() @ memory.detach().clone().t()).gather(1, idx) / temperature)


def nce_loss(x: torch.Tensor, num_train: int, eps: float = 1e-7) -> torch.Tensor:
    """RepDistiller's ContrastLoss on normalised scores x (B, K+1), column 0 the positive."""
    m_pn = (x.shape[1] - 1) / num_train  # K · P_n with the uniform noise P_n = 1/N
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + m_pn + eps))
    log_d0 = torch.log(m_pn / (x[:, 1:] + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


@torch.no_grad()
def update_memory(memory: torch.Tensor, index: torch.Tensor, v: torch.Tensor, momentum: float) -> None:
    """In place: memory[index] ← normalize(m·memory[index] + (1 − m)·v)."""
    rows = memory[index] * momentum + v.detach().float() * (1 - momentum)
    memory.index_copy_(0, index, F.normalize(rows, dim=1))


class CRDHead(nn.Module):
    """The trainable embeddings and the (non-trainable, checkpointed) memories and constants Z."""

    def __init__(self, d_s: int, d_t: int, feat_dim: int, num_train: int) -> None:
        super().__init__()
        self.embed_s, self.embed_t = nn.Linear(d_s, feat_dim), nn.Linear(d_t, feat_dim)
        std = 1.0 / math.sqrt(feat_dim / 3)  # rows start with unit norm in expectation
        self.register_buffer("memory_s", torch.rand(num_train, feat_dim) * 2 * std - std)
        self.register_buffer("memory_t", torch.rand(num_train, feat_dim) * 2 * std - std)
        self.register_buffer("z", torch.full((2,), -1.0))  # (Z_s, Z_t); −1 until the first batch


@register_method(CRDConfig)
class CRD(Objective):
    """CRD: CE + 0.8·NCE contrast of student/teacher embeddings against momentum memories."""

    def __init__(self, student: nn.Module, teacher: Teacher, cfg: CRDConfig, in_shape: tuple[int, ...],
                 num_train: int) -> None:
        super().__init__(student, teacher)
        if num_train < 2:
            raise UserError(f"crd: needs the training-set size (≥ 2) for its memory bank, got num_train={num_train}")
        t_net = teacher.single("crd", "its penultimate features are contrasted")
        self.s_idx, self.t_idx = penultimate_index(student), penultimate_index(t_net)
        dim = lambda s: s[0] if len(s) == 3 else math.prod(s)  # noqa: E731 - channels of pooled(map)
        d_s, d_t = dim(block_shapes(student, in_shape)[-1]), dim(block_shapes(t_net, in_shape)[-1])
        self.crd = CRDHead(d_s, d_t, cfg.feat_dim, num_train).to(next(student.parameters()).device)
        self.num_train, self.k, self.cfg = num_train, min(cfg.nce_k, num_train - 1), cfg

    @classmethod
    def from_config(cls, cfg: CRDConfig, student: nn.Module, ctx: Context) -> "CRD":
        return cls(student, ctx.teacher(cfg), cfg, ctx.in_shape, ctx.num_train)

    def forward(self, batch: Batch, progress: float) -> dict[str, torch.Tensor]:
        if batch.index is None:
            raise UserError("crd: needs a loader that yields example indices (batch.index) for its memory bank")
        c, h, n, index = self.cfg, self.crd, self.num_train, batch.index.long()
        z_s, (f_s,), z_t, (f_t,) = student_teacher_features(self.student, self.teacher.single(), batch.x,
                                                            [self.s_idx], [self.t_idx])
        idx = torch.cat([index[:, None], sample_negatives(index, n, self.k)], 1)
        # Embeddings, scores and the NCE loss in fp32 even under bf16 autocast (exp(score / 0.07)).
        with torch.autocast(batch.x.device.type, enabled=False):
            v_s = F.normalize(h.embed_s(pooled(f_s).float()), dim=1)
            v_t = F.normalize(h.embed_t(pooled(f_t).float()), dim=1)
            x_s = contrast_scores(v_s, h.memory_t, idx, c.temperature)  # student anchor, teacher memory
            x_t = contrast_scores(v_t, h.memory_s, idx, c.temperature)
            if bool(h.z[0] < 0):  # first batch: fix Z so that the scores average to 1/N
                h.z.copy_(torch.stack([x_s.detach().mean(), x_t.detach().mean()]) * n)
            crd = nce_loss(x_s / h.z[0], n) + nce_loss(x_t / h.z[1], n)
            update_memory(h.memory_s, index, v_s, c.momentum)
            update_memory(h.memory_t, index, v_t, c.momentum)
        out = {"ce": c.ce_weight * F.cross_entropy(z_s.float(), batch.y), "crd": c.weight * crd}
        if c.kd_weight > 0:
            p_t = F.softmax(z_t.float() / c.kd_temperature, 1)
            out["kd"] = c.kd_weight * c.kd_temperature**2 * soft_kl(z_s, p_t, c.kd_temperature)
        return out

    def saved_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "crd": self.crd}
