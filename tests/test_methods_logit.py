"""Known-value tests of the logit-based methods: DKD, DIST and logit standardisation (KD+LS, DKD+LS)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillab.data.batch import Batch
from distillab.methods import DIST, DISTConfig, DKD, DKDConfig, KD, KDConfig, Context, Teacher, build_objective
from distillab.methods.dist import dist_loss, dist_relations, pearson_rows
from distillab.methods.dkd import dkd_terms, warmup_factor
from distillab.methods.kd import kd_losses, standardize, teacher_probs
from distillab.models import create_model


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


# ---------------------------------------------------------------- DKD

def test_dkd_terms_hand_computed_three_classes():
    # Two examples, 3 classes, T = 2, targets 0 and 2; every number below with the math module.
    zs = [[0.0, 1.0, 0.5], [1.0, -1.0, 2.0]]
    zt = [[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]]
    y, T = [0, 2], 2.0
    tckd = nckd = kd = 0.0
    for s, t, k in zip(zs, zt, y, strict=True):
        ps, pt = _softmax([a / T for a in s]), _softmax([a / T for a in t])
        bs, bt = [ps[k], 1 - ps[k]], [pt[k], 1 - pt[k]]
        others = [c for c in range(3) if c != k]
        hs, ht = _softmax([s[c] / T for c in others]), _softmax([t[c] / T for c in others])
        tckd += T * T * _kl(bt, bs) / 2
        nckd += T * T * _kl(ht, hs) / 2
        kd += T * T * (_kl(bt, bs) + (1 - pt[k]) * _kl(ht, hs)) / 2  # the paper's KD = TCKD + (1 - p_t) NCKD
    got_t, got_n = dkd_terms(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), T)
    assert got_t.item() == pytest.approx(tckd, rel=1e-5)
    assert got_n.item() == pytest.approx(nckd, rel=1e-5)
    # the decomposition reproduces Hinton's KD term at the same T
    p_t = F.softmax(torch.tensor(zt) / T, 1)
    assert kd_losses(torch.tensor(zs), p_t, torch.tensor(y), T, 1.0)["kd"].item() == pytest.approx(kd, rel=1e-5)


def test_dkd_zero_loss_and_gradient_when_student_equals_teacher():
    torch.manual_seed(0)
    zt = torch.randn(4, 5) * 3
    zs = zt.clone().requires_grad_()
    tckd, nckd = dkd_terms(zs, zt, torch.tensor([0, 1, 4, 2]), 4.0)
    assert tckd.item() == pytest.approx(0, abs=1e-6) and nckd.item() == pytest.approx(0, abs=1e-6)
    (tckd + 8 * nckd).backward()
    assert zs.grad.abs().max().item() < 1e-6


def test_dkd_binary_term_stays_finite_when_target_saturates():
    zs = torch.tensor([[400.0, 0.0, 0.0]], requires_grad=True)  # p_y == 1.0 exactly in fp32
    tckd, nckd = dkd_terms(zs, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]), 4.0)
    (tckd + nckd).backward()
    assert torch.isfinite(tckd) and torch.isfinite(zs.grad).all()
    assert tckd.item() > 10  # the teacher keeps non-target mass, the student has ~none


def test_dkd_warmup_factor_at_epochs_0_10_20_30():
    assert [warmup_factor(e, 20) for e in (0, 10, 20, 30)] == [0.0, 0.5, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    torch.manual_seed(0)
    s, t = nn.Linear(3, 5), nn.Linear(3, 5)
    x, y = torch.randn(6, 3), torch.randint(0, 5, (6,))
    obj = build_objective(DKDConfig(), s, Context(teacher=Teacher(t), epochs=40))
    tckd, nckd = dkd_terms(s(x), t(x), y, 4.0)
    for progress, factor in ((0.0, 0.0), (0.25, 0.5), (0.5, 1.0), (0.75, 1.0)):  # epochs 0, 10, 20, 30
        out = obj(Batch(x, y), progress)
        assert out["tckd"].item() == pytest.approx(factor * 1.0 * tckd.item(), rel=1e-5, abs=1e-9)
        assert out["nckd"].item() == pytest.approx(factor * 8.0 * nckd.item(), rel=1e-5, abs=1e-9)
        assert out["ce"].item() == pytest.approx(F.cross_entropy(s(x), y).item(), rel=1e-6)


def test_dkd_ensemble_pseudo_logits_average_probabilities():
    torch.manual_seed(0)
    s, a, b = nn.Linear(3, 5), nn.Linear(3, 5), nn.Linear(3, 5)
    x, y = torch.randn(6, 3), torch.randint(0, 5, (6,))
    cfg = DKDConfig(warmup=0)
    ens = DKD(s, Teacher([a, b]), cfg)
    assert torch.allclose(F.softmax(ens.teacher_logits(x) / 4.0, 1), Teacher([a, b]).probs(x, 4.0), atol=1e-6)
    # an ensemble of two copies is the single teacher
    one, two = DKD(s, Teacher(a), cfg)(Batch(x, y), 1.0), DKD(s, Teacher([a, a]), cfg)(Batch(x, y), 1.0)
    for k in one:
        assert two[k].item() == pytest.approx(one[k].item(), rel=1e-5)


def test_dkd_with_logit_standardisation_is_affine_invariant():
    torch.manual_seed(0)
    zs, zt, y = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 3, 5, 1])
    ref_t, ref_n = dkd_terms(standardize(zs), standardize(zt), y, 2.0)
    cfg = DKDConfig(logit_standardize=True, temperature=2.0, warmup=0)
    for k_s, c_s, k_t, c_t in ((1, 0, 1, 0), (3.0, 5.0, 0.5, -2.0)):
        # identity student: its logits are the batch's x; the teacher returns fixed logits
        out = DKD(nn.Identity(), Teacher(_Const(k_t * zt + c_t)), cfg)(Batch(k_s * zs + c_s, y), 1.0)
        assert out["tckd"].item() == pytest.approx(ref_t.item(), rel=1e-4)
        assert out["nckd"].item() == pytest.approx(8 * ref_n.item(), rel=1e-4)
    plain = DKD(nn.Identity(), Teacher(_Const(0.5 * zt)), DKDConfig(temperature=2.0, warmup=0))(Batch(3 * zs, y), 1.0)
    assert plain["nckd"].item() != pytest.approx(8 * ref_n.item(), rel=1e-2)


class _Const(nn.Module):
    """A 'teacher' that returns fixed logits whatever the input."""

    def __init__(self, z):
        super().__init__()
        self.register_buffer("z", z)

    def forward(self, x):
        return self.z


# ---------------------------------------------------------------- DIST

def test_pearson_and_relations_hand_computed_2x3():
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]])
    b = torch.tensor([[2.0, 4.0, 7.0], [0.0, 1.0, 0.0]])
    # row 0: deviations (-1, 0, 1) and (-7, -1, 8)/3: dot 5, norms sqrt(2), sqrt(114)/3 -> 15 / sqrt(228)
    # row 1: deviations (2, -1, -1)/3 and (-1, 2, -1)/3: dot -1/3, norms sqrt(6)/3 each -> -1/2
    r0, r1 = 15 / math.sqrt(228), -0.5
    assert pearson_rows(a, b).tolist() == pytest.approx([r0, r1], rel=1e-6)
    inter, intra = dist_relations(a, b)
    assert inter.item() == pytest.approx(1 - (r0 + r1) / 2, rel=1e-6)
    # columns: (1,1) is constant -> 0 (eps), (2,0)~(4,1) -> 1, (3,0)~(7,0) -> 1
    assert intra.item() == pytest.approx(1 - 2 / 3, rel=1e-6)


def test_dist_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    z = torch.randn(5, 4) * 2
    zs = z.clone().requires_grad_()
    loss = dist_loss(zs, F.softmax(z / 4.0, 1), 4.0)
    loss.backward()
    # not exactly 0: the official eps 1e-8 in the cosine's denominator, times tau^2 = 16
    assert loss.item() == pytest.approx(0, abs=1e-4)
    assert zs.grad.abs().max().item() < 1e-4


def test_dist_loss_matches_corrcoef_and_tau_squared():
    torch.manual_seed(1)
    zs, zt, tau = torch.randn(6, 5), torch.randn(6, 5), 4.0
    ys, yt = F.softmax(zs / tau, 1), F.softmax(zt / tau, 1)
    inter = 1 - torch.stack([torch.corrcoef(torch.stack([ys[i], yt[i]]))[0, 1] for i in range(6)]).mean()
    intra = 1 - torch.stack([torch.corrcoef(torch.stack([ys[:, c], yt[:, c]]))[0, 1] for c in range(5)]).mean()
    got = dist_loss(zs, yt, tau, beta=1.0, gamma=0.5)
    assert got.item() == pytest.approx(16 * (inter + 0.5 * intra).item(), rel=1e-4)
    obj = DIST(nn.Identity(), Teacher(_Const(zt)), DISTConfig())
    out = obj(Batch(zs, torch.zeros(6, dtype=torch.long)), 0.3)
    assert out["dist"].item() == pytest.approx(2 * 16 * (inter + intra).item(), rel=1e-4)
    assert out["ce"].item() == pytest.approx(F.cross_entropy(zs, torch.zeros(6, dtype=torch.long)).item(), rel=1e-6)


# ---------------------------------------------------------------- logit standardisation

def test_standardize_hand_values():
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # row 0: mean 2, unbiased std 1; row 1: mean 2, unbiased std sqrt((4 + 4 + 16) / 2) = sqrt(12)
    expected = torch.tensor([[-1.0, 0.0, 1.0], [-2 / math.sqrt(12), -2 / math.sqrt(12), 4 / math.sqrt(12)]])
    assert torch.allclose(standardize(z), expected, atol=1e-6)


def test_ls_kd_invariant_to_shift_and_scale_of_both_logits():
    torch.manual_seed(0)
    zs, zt, y, T = torch.randn(5, 7), torch.randn(5, 7), torch.randint(0, 7, (5,)), 2.0

    def kd_term(s, t, ls):
        p = teacher_probs(Teacher(_Const(t)), Batch(s, torch.zeros(len(s), dtype=torch.long)), T, ls)
        return kd_losses(s, p, y, T, 0.9, ce_weight=0.1, kd_weight=9.0, standardized=ls)["kd"].item()

    base = kd_term(zs, zt, True)
    # hand: z-score with plain ops, then 9 * T^2 * KL
    def z(v):
        d = v - v.mean(1, keepdim=True)
        return d / (d.pow(2).sum(1, keepdim=True) / (v.shape[1] - 1)).sqrt()
    p, q = F.softmax(z(zt) / T, 1), F.softmax(z(zs) / T, 1)
    assert base == pytest.approx(9 * T * T * (p * (p / q).log()).sum(1).mean().item(), rel=1e-4)
    for s2, t2 in ((zs + 3.0, zt - 7.0), (2.5 * zs, 0.3 * zt), (4 * zs + 1, 10 * zt - 2)):
        assert kd_term(s2, t2, True) == pytest.approx(base, rel=1e-4)
    assert kd_term(2.5 * zs, 0.3 * zt, False) != pytest.approx(kd_term(zs, zt, False), rel=1e-2)  # plain KD is not


def test_ls_ensemble_zscores_each_member():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)
    x = torch.randn(6, 3)
    xb = Batch(x, torch.zeros(len(x), dtype=torch.long))
    got = teacher_probs(Teacher([a, b]), xb, 2.0, standardized=True)
    # scaling one member's logits must not change its z-scored contribution
    b2 = nn.Linear(3, 4)
    b2.load_state_dict({k: 5 * v for k, v in b.state_dict().items()})
    assert torch.allclose(teacher_probs(Teacher([a, b2]), xb, 2.0, standardized=True), got, atol=1e-5)
    assert torch.allclose(got, (F.softmax(standardize(a(x)) / 2, 1) + F.softmax(standardize(b(x)) / 2, 1)) / 2)


def test_kd_config_defaults_unchanged_and_ls_weights_selectable():
    cfg = KDConfig()
    got = (cfg.temperature, cfg.alpha, cfg.ce_weight, cfg.kd_weight, cfg.logit_standardize)
    assert got == (4.0, 0.9, None, None, False)
    torch.manual_seed(0)
    zs, zt, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    obj = KD(nn.Identity(), Teacher(_Const(zt)), KDConfig(temperature=2, ce_weight=0.1, kd_weight=9,
                                                         logit_standardize=True))
    out = obj(Batch(zs, y), 0.0)
    assert out["ce"].item() == pytest.approx(0.1 * F.cross_entropy(zs, y).item(), rel=1e-6)  # raw logits
    p = F.softmax(standardize(zt) / 2, 1)
    assert out["kd"].item() == pytest.approx(9 * 4 * F.kl_div(F.log_softmax(standardize(zs) / 2, 1), p,
                                                              reduction="batchmean").item(), rel=1e-5)


# ---------------------------------------------------------------- objective contracts

@pytest.mark.parametrize("cfg", [DKDConfig(), DKDConfig(logit_standardize=True, temperature=2, alpha=9, beta=72),
                                 DISTConfig(), KDConfig(logit_standardize=True, temperature=2, ce_weight=0.1,
                                                        kd_weight=9)],
                         ids=["dkd", "dkd-ls", "dist", "kd-ls"])
@pytest.mark.parametrize("members", [1, 2])
def test_objective_contract(cfg, members):
    torch.manual_seed(0)
    teacher = Teacher([create_model("cnn:8-16", 10, 1, 8) for _ in range(members)])
    student = create_model("cnn:8-8", 10, 1, 8)
    obj = build_objective(cfg, student, Context(teacher=teacher, in_shape=(1, 8, 8), epochs=10))
    out = obj(Batch(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))), 0.5)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.values())
    sum(out.values()).backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())
    saved = obj.saved_modules()
    assert set(saved) == {"student"}
    clone = create_model("cnn:8-8", 10, 1, 8)
    clone.load_state_dict(saved["student"].state_dict())
    for k, v in saved["student"].state_dict().items():
        assert torch.equal(clone.state_dict()[k], v)
