"""AT, PKT, SP and RKD: each loss against values worked out by hand, and the objectives' contracts."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from distillab.data.batch import Batch
from distillab.errors import UserError
from distillab.methods import (AT, ATConfig, Context, PKTConfig, RKDConfig, SPConfig, Teacher,
                               build_objective)
from distillab.methods.at import at_loss, attention_map
from distillab.methods.pkt import cosine_probabilities, pkt_loss
from distillab.methods.rkd import pairwise_distances, rkd_angle_loss, rkd_distance_loss, triplet_angles
from distillab.methods.sp import similarity_matrix, sp_loss
from distillab.models import create_model

# ---------------------------------------------------------------- AT


def test_attention_map_known_value():
    # one example, 2 channels, a 1x2 map: channel 0 = [1, -2], channel 1 = [3, 0]
    f = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])
    # squares [1, 4] and [9, 0]; channel mean [5, 2]; L2-normalised by sqrt(29)
    assert attention_map(f).flatten().tolist() == pytest.approx([5 / math.sqrt(29), 2 / math.sqrt(29)])


def test_at_loss_known_value_is_mean_over_batch_and_positions():
    f_s = torch.tensor([[[[1.0, 0.0]]], [[[3.0, 4.0]]]])  # (2, 1, 1, 2)
    f_t = torch.tensor([[[[0.0, 2.0]]], [[[3.0, 4.0]]]])
    # example 0: q_s = [1, 0], q_t = [0, 1] -> squared diffs 1, 1; example 1: identical -> 0, 0
    assert at_loss(f_s, f_t).item() == pytest.approx((1 + 1 + 0 + 0) / 4)
    f_t2 = torch.tensor([[[[1.0, 1.0]]], [[[3.0, 4.0]]]])
    a = torch.tensor([9.0, 16.0]) / math.sqrt(81 + 256)  # example 1 of f_s: squares [9, 16]
    b = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    hand = ((torch.tensor([1.0, 0.0]) - b).pow(2).sum() + (a - a).pow(2).sum()) / 4
    assert at_loss(f_s, f_t2).item() == pytest.approx(hand.item(), rel=1e-6)
    assert at_loss(f_s, f_t2 * 7).item() == pytest.approx(hand.item(), rel=1e-6)  # scale-free


def test_at_pools_the_larger_feature_map_not_the_attention_map():
    f_s = torch.ones(1, 1, 4, 4)
    f_s[0, 0, :2, :2] = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # averages to 0 as a feature
    f_t = torch.ones(1, 1, 2, 2)
    # pooled feature [[0, 1], [1, 1]] -> map [0, 1, 1, 1]/sqrt(3); teacher [1, 1, 1, 1]/2
    hand = ((0 - 0.5) ** 2 + 3 * (1 / math.sqrt(3) - 0.5) ** 2) / 4
    assert at_loss(f_s, f_t).item() == pytest.approx(hand, rel=1e-6)
    assert at_loss(f_t, f_s).item() == pytest.approx(hand, rel=1e-6)  # either side may be larger


def test_at_zero_loss_and_grad_when_equal():
    f = torch.randn(3, 4, 5, 5, requires_grad=True)
    loss = at_loss(f, f.detach().clone())
    loss.backward()
    assert loss.item() == 0 and f.grad.abs().max().item() == 0

# ---------------------------------------------------------------- PKT


def test_pkt_known_value_is_kl_teacher_to_student_over_b_squared():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cosines I -> K [[1, .5], [.5, 1]] -> P rows (2/3, 1/3)
    t = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # parallel: K all 1 -> P all 1/2
    assert cosine_probabilities(s).tolist()[0] == pytest.approx([2 / 3, 1 / 3], rel=1e-6)
    # sum_ij 1/2 log(1/2 / P^s_ij) over the 4 entries, divided by B^2 = 4
    hand = (2 * 0.5 * math.log(0.5 / (2 / 3)) + 2 * 0.5 * math.log(0.5 / (1 / 3))) / 4
    assert pkt_loss(s, t).item() == pytest.approx(hand, rel=1e-5)
    assert pkt_loss(5 * s, t).item() == pytest.approx(hand, rel=1e-5)  # cosine kernel: scale-free


def test_pkt_zero_loss_and_grad_when_equal():
    f = torch.randn(6, 5, requires_grad=True)
    loss = pkt_loss(f, f.detach().clone())
    loss.backward()
    assert abs(loss.item()) < 1e-6 and f.grad.abs().max().item() < 1e-6
    z = torch.zeros(2, 3, requires_grad=True)  # a zero feature: finite, no NaN gradient
    pkt_loss(z, torch.randn(2, 3)).backward()
    assert torch.isfinite(z.grad).all()

# ---------------------------------------------------------------- SP


def test_sp_known_value():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # G = [[1, 1], [1, 2]] -> rows [1, 1]/√2, [1, 2]/√5
    t = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # G = diag(9, 4) -> rows normalised: I
    assert similarity_matrix(t).flatten().tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0])
    r2, r5 = 1 / math.sqrt(2), 1 / math.sqrt(5)
    hand = ((r2 - 1) ** 2 + r2 ** 2 + r5 ** 2 + (2 * r5 - 1) ** 2) / 2 ** 2
    assert sp_loss(s, t).item() == pytest.approx(hand, rel=1e-6)
    # maps are flattened per example; channel counts may differ
    assert sp_loss(s.view(2, 2, 1, 1), t.view(2, 3, 1, 1)).item() == pytest.approx(hand, rel=1e-6)


def test_sp_zero_loss_and_grad_when_equal():
    f = torch.randn(4, 3, 2, 2, requires_grad=True)
    loss = sp_loss(f, f.detach().clone())
    loss.backward()
    assert loss.item() == 0 and f.grad.abs().max().item() == 0

# ---------------------------------------------------------------- RKD


def test_pairwise_distances_known_value():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
    assert pairwise_distances(x).flatten().tolist() == pytest.approx([0, 5, 3, 5, 0, 4, 3, 4, 0], abs=1e-5)


def test_rkd_distance_known_value():
    s = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 3, 2; mean of the 6 positive = 2
    t = torch.tensor([[0.0], [2.0], [4.0]])  # distances 2, 4, 2; mean 8/3
    # normalised: student .5, 1.5, 1; teacher .75, 1.5, .75 -> diffs .25, 0, .25 (each twice)
    hand = 4 * 0.5 * 0.25 ** 2 / 9  # Huber, quadratic part, mean over all 9 entries
    assert rkd_distance_loss(s, t).item() == pytest.approx(hand, rel=1e-5)
    assert rkd_distance_loss(10 * t, t).item() == pytest.approx(0, abs=1e-7)  # normalised by the mean


def test_rkd_angle_known_value():
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # right angle at x_0
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # collinear
    # nonzero differences (both orders of j, k): at i=0 cos(e01, e02) 0 vs 1; at i=1 1/√2 vs −1;
    # at i=2 1/√2 vs 1. Huber: |d| < 1 -> d²/2, else |d| − 1/2.
    r = 1 / math.sqrt(2)
    hand = 2 * (0.5 * 1 ** 2 + (r + 1 - 0.5) + 0.5 * (1 - r) ** 2) / 27
    assert triplet_angles(s)[1, 0, 2].item() == pytest.approx(r, rel=1e-6)
    assert rkd_angle_loss(s, t).item() == pytest.approx(hand, rel=1e-5)


def test_rkd_zero_grad_when_equal_and_teacher_side_gets_none():
    s = torch.randn(5, 4, requires_grad=True)
    t = s.detach().clone().requires_grad_(True)
    loss = rkd_distance_loss(s, t) + rkd_angle_loss(s, t)
    loss.backward()
    assert loss.item() < 1e-10 and s.grad.abs().max().item() < 1e-5
    assert t.grad is None

# ---------------------------------------------------------------- objectives


def _build(cfg, in_shape=(1, 8, 8)):
    torch.manual_seed(0)
    student = create_model("cnn:8-16", 10, 1, 8)
    teacher = Teacher(create_model("cnn:16-16-32", 10, 1, 8))
    return build_objective(cfg, student, Context(in_shape=in_shape, teacher=teacher)), student, teacher


CASES = [(ATConfig(), "at", 1000.0), (PKTConfig(), "pkt", 30000.0), (SPConfig(), "sp", 3000.0),
         (RKDConfig(), "distance", 25.0)]


@pytest.mark.parametrize("cfg,term,weight", CASES, ids=[c[1] for c in CASES])
def test_objective_contract(cfg, term, weight):
    obj, student, teacher = _build(cfg)
    obj.train()
    calls = []
    student.register_forward_hook(lambda *a: calls.append(1))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    out = obj(Batch(x, y), 0.3)
    assert len(calls) == 1  # one student forward gives both the taps and the logits
    assert term in out and "ce" in out and all(torch.isfinite(v) and v.ndim == 0 for v in out.values())
    assert out["ce"].item() == pytest.approx(F.cross_entropy(student(x), y).item(), rel=1e-5)
    out[term].backward()  # the distillation term alone reaches the student's first block
    assert student.blocks[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert set(obj.saved_modules()) == {"student"}
    twin = copy.deepcopy(obj.saved_modules()["student"])
    for p in twin.parameters():
        p.data.zero_()
    twin.load_state_dict(obj.saved_modules()["student"].state_dict())
    for k, v in obj.saved_modules()["student"].state_dict().items():
        assert torch.equal(v, twin.state_dict()[k])


def _trunk(model, x):
    """Output of every block but the last."""
    for b in model.blocks[:-1]:
        x = b(x)
    return x


def test_rkd_objective_default_weights_and_terms():
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    obj, student, teacher = _build(RKDConfig())
    obj.eval()
    out = obj(Batch(x, y), 0.0)
    with torch.no_grad():
        t = teacher.members[0]
        e_s = student.blocks[-1](_trunk(student, x)).mean((2, 3))
        e_t = t.blocks[-1](_trunk(t, x)).mean((2, 3))
        assert out["distance"].item() == pytest.approx(25 * rkd_distance_loss(e_s, e_t).item(), rel=1e-5)
        assert out["angle"].item() == pytest.approx(50 * rkd_angle_loss(e_s, e_t).item(), rel=1e-5)
    no_angle = build_objective(RKDConfig(angle_weight=0), student, Context(teacher=teacher))
    assert set(no_angle(Batch(x, y), 0.0)) == {"ce", "distance"}


def test_pkt_objective_uses_pooled_last_block():
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    obj, student, teacher = _build(PKTConfig())
    obj.eval()
    with torch.no_grad():
        t = teacher.members[0]
        hand = 30000 * pkt_loss(
            student.blocks[-1](_trunk(student, x)).mean((2, 3)), t.blocks[-1](_trunk(t, x)).mean((2, 3))
        )
        assert obj(Batch(x, y), 0.0)["pkt"].item() == pytest.approx(hand.item(), rel=1e-5)


def test_at_pairs_auto_explicit_and_errors():
    obj, _, _ = _build(ATConfig())
    assert obj.pairs == [(0, 0), (1, 2)]
    obj, _, _ = _build(ATConfig(pairs=[[1, -1]]))
    assert obj.pairs == [(1, 2)]
    s, t = create_model("resnet8x4", 100, 3, 32), create_model("resnet32x4", 100, 3, 32)
    assert AT(s, Teacher(t), ATConfig(), (3, 32, 32)).pairs == [(1, 5), (2, 10), (3, 15)]  # f1..f3
    mlp = create_model("mlp:16", 10, 1, 8)
    with pytest.raises(UserError, match="convolutional"):
        AT(mlp, Teacher(create_model("mlp:16", 10, 1, 8)), ATConfig(), (1, 8, 8))
    with pytest.raises(UserError, match="not convolutional"):
        AT(mlp, Teacher(create_model("cnn:8", 10, 1, 8)), ATConfig(pairs=[[0, 0]]), (1, 8, 8))
    cnn = create_model("cnn:8", 10, 1, 8)
    with pytest.raises(UserError, match="one teacher"):
        AT(cnn, Teacher([create_model("cnn:8", 10, 1, 8), create_model("cnn:8", 10, 1, 8)]), ATConfig(), (1, 8, 8))


def test_at_objective_term_is_sum_over_pairs():
    obj, student, teacher = _build(ATConfig(weight=2.0))
    obj.eval()
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    out = obj(Batch(x, y), 0.0)
    with torch.no_grad():
        t = teacher.members[0]
        s0, t0 = student.blocks[0](x), t.blocks[0](x)
        hand = 2.0 * (at_loss(s0, t0) + at_loss(student.blocks[1](s0), t.blocks[2](t.blocks[1](t0))))
    assert out["at"].item() == pytest.approx(hand.item(), rel=1e-5)


def test_sp_default_pair_is_last_blocks_and_pairs_sum():
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    obj, student, teacher = _build(SPConfig())
    assert obj.pairs == [(1, 2)]
    obj.eval()
    with torch.no_grad():
        t = teacher.members[0]
        hand = 3000 * sp_loss(student.blocks[1](student.blocks[0](x)), t.blocks[2](_trunk(t, x)))
    assert obj(Batch(x, y), 0.0)["sp"].item() == pytest.approx(hand.item(), rel=1e-5)
    obj, student, teacher = _build(SPConfig(pairs=[[0, 0], [1, 2]], weight=1.0))
    obj.eval()
    with torch.no_grad():
        t = teacher.members[0]
        s0, t0 = student.blocks[0](x), t.blocks[0](x)
        hand = sp_loss(s0, t0) + sp_loss(student.blocks[1](s0), t.blocks[2](t.blocks[1](t0)))
    assert obj(Batch(x, y), 0.0)["sp"].item() == pytest.approx(hand.item(), rel=1e-5)
    with pytest.raises(ValueError):  # pydantic: at least one pair
        SPConfig(pairs=[])
