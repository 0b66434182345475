"""Known-value tests of Hinton's loss: KL form, T² scaling, α weighting, ensemble average."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillab.data.batch import Batch
from distillab.methods import KD, KDConfig, Teacher
from distillab.methods.kd import kd_losses, soft_kl


def test_kl_is_zero_when_student_matches_teacher():
    z = torch.tensor([[1.0, 2.0, -1.0]])
    p = F.softmax(z / 3.0, dim=1)
    assert soft_kl(z, p, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_known_value_uniform_student_one_hot_teacher():
    # KL([1, 0] || softmax([0, 0] / T)) = log 2 for every T; the kd term is alpha * T^2 * log 2.
    z = torch.zeros(1, 2)
    p = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([0])
    for T in (1.0, 2.0, 20.0):
        out = kd_losses(z, p, y, T, alpha=0.9)
        assert out["kd"].item() == pytest.approx(0.9 * T * T * math.log(2), rel=1e-6)
        assert out["ce"].item() == pytest.approx(0.1 * math.log(2), rel=1e-6)


def test_alpha_one_has_no_label_term():
    out = kd_losses(torch.randn(4, 3), F.softmax(torch.randn(4, 3), 1), torch.tensor([0, 1, 2, 0]), 4.0, 1.0)
    assert set(out) == {"kd"}


def test_matches_hand_computed_batch():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(5, 4), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 3, 0])
    T, a = 3.0, 0.7
    p = F.softmax(z_t / T, 1)
    q = F.softmax(z_s / T, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    ce = -F.log_softmax(z_s, 1)[torch.arange(5), y].mean()
    out = kd_losses(z_s, p, y, T, a)
    assert out["kd"].item() == pytest.approx(a * T * T * kl.item(), rel=1e-5)
    assert out["ce"].item() == pytest.approx((1 - a) * ce.item(), rel=1e-5)


def test_t_squared_keeps_soft_gradient_scale():
    # The gradient of KL(p_T || q_T) wrt the logits shrinks like 1/T^2 (Hinton et al. 2015, sec. 2.1);
    # with the T^2 factor, the gradient norms at T=10 and T=20 agree, without it they differ ~4x.
    torch.manual_seed(1)
    z_t, z_s0 = torch.randn(8, 10), torch.randn(8, 10)
    norms = {}
    for T in (10.0, 20.0):
        z_s = z_s0.clone().requires_grad_()
        kd_losses(z_s, F.softmax(z_t / T, 1), torch.zeros(8, dtype=torch.long), T, 1.0)["kd"].backward()
        norms[T] = z_s.grad.norm().item()
    assert norms[10.0] / norms[20.0] == pytest.approx(1.0, abs=0.05)
    unscaled_ratio = (norms[10.0] / 100) / (norms[20.0] / 400)
    assert unscaled_ratio == pytest.approx(4.0, rel=0.05)


def test_ensemble_teacher_averages_member_probabilities():
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)
    x = torch.randn(6, 3)
    T = 2.5
    expected = (F.softmax(a(x) / T, 1) + F.softmax(b(x) / T, 1)) / 2
    teacher = Teacher([a, b])
    assert torch.allclose(teacher.probs(x, T), expected, atol=1e-6)
    assert torch.allclose(teacher.probs(x, T).sum(1), torch.ones(6))


def test_kd_objective_uses_teacher_soft_targets():
    torch.manual_seed(0)
    s, t = nn.Linear(3, 4), nn.Linear(3, 4)
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
    obj = KD(s, Teacher(t), KDConfig(temperature=4.0, alpha=0.5, teacher=["unused"]))
    out = obj(Batch(x, y), 0.0)
    ref = kd_losses(s(x), F.softmax(t(x) / 4.0, 1), y, 4.0, 0.5)
    for k in ref:
        assert out[k].item() == pytest.approx(ref[k].item(), rel=1e-6)
