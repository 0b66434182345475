"""Known values of the FitNets, BAN and Label Refinery losses, and their objectives' contracts."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillab.errors import UserError
from distillab.data.batch import Batch
from distillab.methods import (BornAgain, BornAgainConfig, FitNetHint, FitNetHintConfig, FitNetKD, FitNetKDConfig,
                               Refinery, RefineryConfig, Teacher, soft_cross_entropy)
from distillab.methods.born_again import cwtm_weights, permute_non_argmax
from distillab.methods.fitnet import hint_loss
from distillab.methods.fitnet import build_regressor
from distillab.models import create_model


def test_hint_loss_known_value():
    u = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    r = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    # ½ (1 + 4) for the first sample, ½ · 9 for the second, averaged over the batch
    assert hint_loss(u, r).item() == pytest.approx((2.5 + 4.5) / 2)


def test_regressor_kernel_bridges_spatial_sizes():
    reg = build_regressor(torch.zeros(2, 8, 14, 14), torch.zeros(2, 32, 7, 7))
    assert reg[0].kernel_size == (8, 8) and reg(torch.zeros(2, 8, 14, 14)).shape == (2, 32, 7, 7)
    assert build_regressor(torch.zeros(2, 8, 7, 7), torch.zeros(2, 16, 7, 7))[0].kernel_size == (1, 1)
    assert isinstance(build_regressor(torch.zeros(2, 20), torch.zeros(2, 30))[0], nn.Linear)
    with pytest.raises(UserError, match="cannot"):
        build_regressor(torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 7, 7))
    with pytest.raises(UserError, match="cannot"):
        build_regressor(torch.zeros(2, 8), torch.zeros(2, 8, 7, 7))


def test_fitnet_stage1_trains_only_up_to_guided_block():
    torch.manual_seed(0)
    teacher = Teacher(create_model("cnn:8-8", 10, 1, 8))
    student = create_model("cnn:4-4-4-4", 10, 1, 8, norm="none")
    obj = FitNetHint(student, teacher, FitNetHintConfig(teacher=["t"], hint=1, guided=1), (1, 8, 8))
    loss = sum(obj(Batch(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), 0.0).values())
    loss.backward()
    assert student.blocks[0][0].weight.grad is not None and student.blocks[1][0].weight.grad is not None
    assert student.blocks[2][0].weight.grad is None and student.head[-1].weight.grad is None
    assert all(p.grad is not None for p in obj.regressor.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert set(obj.saved_modules()) == {"student", "regressor"}


def test_fitnet_kd_lambda_anneals_from_4_to_1():
    s, t = nn.Linear(3, 4), nn.Linear(3, 4)
    obj = FitNetKD(s, Teacher(t), FitNetKDConfig(teacher=["t"]))
    x, y = torch.randn(5, 3), torch.randint(0, 4, (5,))
    soft = soft_cross_entropy(s(x) / 3.0, F.softmax(t(x) / 3.0, 1)).item()
    assert obj(Batch(x, y), 0.0)["soft"].item() == pytest.approx(4 * soft, rel=1e-5)
    assert obj(Batch(x, y), 0.5)["soft"].item() == pytest.approx(2.5 * soft, rel=1e-5)
    assert obj(Batch(x, y), 1.0)["soft"].item() == pytest.approx(soft, rel=1e-5)
    assert obj(Batch(x, y), 0.0)["ce"].item() == pytest.approx(F.cross_entropy(s(x), y).item(), rel=1e-6)


def test_cwtm_weights_known_values():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    w = cwtm_weights(p)
    assert w.tolist() == pytest.approx([0.9 / 2.0, 0.6 / 2.0, 0.5 / 2.0])
    assert w.sum().item() == pytest.approx(1.0)


def test_dkpp_keeps_argmax_and_multiset():
    torch.manual_seed(0)
    p = F.softmax(torch.randn(64, 10) * 3, 1)
    q = permute_non_argmax(p, torch.Generator().manual_seed(1))
    assert torch.equal(q.argmax(1), p.argmax(1))
    assert torch.equal(q.max(1).values, p.max(1).values)
    assert torch.equal(q.sort(1).values, p.sort(1).values)  # same multiset per row
    assert not torch.equal(q, p)  # something moved


def test_soft_cross_entropy_known_value():
    z = torch.zeros(1, 4)
    q = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert soft_cross_entropy(z, q).item() == pytest.approx(math.log(4))


def test_refinery_uses_the_refinerys_softmax_of_the_same_crop():
    s, r = nn.Linear(3, 4), nn.Linear(3, 4)
    x = torch.randn(5, 3)
    obj = Refinery(s, Teacher(r), RefineryConfig(teacher=["r"]))
    out = obj(Batch(x, torch.full((5,), 99)), 0.0)  # labels are never read
    assert out["refined"].item() == pytest.approx(soft_cross_entropy(s(x), F.softmax(r(x), 1)).item(), rel=1e-6)


@pytest.mark.parametrize("variant", ["ban", "ban+l", "cwtm", "dkpp"])
def test_ban_teacher_is_a_frozen_copy(variant):
    torch.manual_seed(0)
    teacher_net = create_model("mlp:16", 4, 1, 4)
    student = create_model("mlp:16", 4, 1, 4)
    before = {k: v.clone() for k, v in teacher_net.state_dict().items()}
    obj = BornAgain(student, Teacher(teacher_net), BornAgainConfig(teacher=["t"], variant=variant))
    assert obj.teacher.members[0] is not obj.student
    assert not any(p is q for p in obj.teacher.parameters() for q in obj.student.parameters())
    opt = torch.optim.SGD(obj.trainable_parameters(), lr=0.5)
    obj.train()
    for _ in range(3):
        loss = sum(obj(Batch(torch.randn(8, 1, 4, 4), torch.randint(0, 4, (8,))), 0.0).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(v, before[k]) for k, v in teacher_net.state_dict().items())
    assert not obj.teacher.training
