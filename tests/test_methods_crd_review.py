"""CRD and ReviewKD: losses against hand computations, negatives, memory bank, connectors, resume."""

import math

import pytest
import torch
import torch.nn.functional as F

from distillab.data.batch import Batch
from distillab.errors import UserError
from distillab.methods import CRD, CRDConfig, ReviewKD, ReviewKDConfig, Teacher
from distillab.methods.crd import contrast_scores, nce_loss, sample_negatives, update_memory
from distillab.methods.reviewkd import ABF, ReviewFusion, hcl_loss
from distillab.models import create_model
from distillab.models.blocks import tap_features

IN = (1, 8, 8)


def tiny_pair(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("cnn:8-16", 10, 1, 8), Teacher(create_model("cnn:16-16-32", 10, 1, 8))


def tiny_batch(n: int = 6, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, *IN, generator=g), torch.randint(0, 10, (n,), generator=g),
                 torch.randperm(20, generator=g)[:n])


def state(modules) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in modules.items() for k, v in m.state_dict().items()}


# ------------------------------------------------------------------------------------------ CRD
def test_negatives_never_contain_the_positive_and_are_distinct():
    torch.manual_seed(0)
    for _ in range(200):
        index = torch.randint(0, 30, (8,))
        neg = sample_negatives(index, 30, 12)
        assert neg.shape == (8, 12) and neg.min() >= 0 and neg.max() < 30
        assert not (neg == index[:, None]).any()
        assert all(len(set(r.tolist())) == 12 for r in neg)  # without replacement
    # K = N − 1: every other example exactly once
    index = torch.tensor([0, 4, 9])
    for row, i in zip(sample_negatives(index, 10, 9), index.tolist(), strict=True):
        assert sorted(row.tolist()) == [j for j in range(10) if j != i]


def test_negatives_are_uniform_over_the_other_examples():
    torch.manual_seed(0)
    neg = sample_negatives(torch.full((20000,), 2), 5, 2)
    counts = torch.bincount(neg.flatten(), minlength=5).float() / 20000
    assert counts[2] == 0
    assert torch.allclose(counts[[0, 1, 3, 4]], torch.full((4,), 0.5), atol=0.02)  # 2 of 4 per row


def test_nce_loss_on_a_tiny_bank_by_hand():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    v = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    idx = torch.tensor([[0, 1, 2], [3, 2, 0]])  # column 0 positive, K = 2 negatives
    T, Z, N = 0.5, 2.0, 4
    dots = [[0.6, 0.8, -0.6], [0.6, -1.0, 1.0]]  # <memory[idx[b, k]], v[b]> by hand
    x = [[math.exp(d / T) / Z for d in row] for row in dots]
    assert torch.allclose(contrast_scores(v, memory, idx, T) / Z, torch.tensor(x), rtol=1e-6)
    m_pn, eps = 2 / N, 1e-7
    h = [math.log(r[0] / (r[0] + m_pn + eps)) + sum(math.log(m_pn / (xk + m_pn + eps)) for xk in r[1:]) for r in x]
    expected = -(h[0] + h[1]) / 2
    assert nce_loss(torch.tensor(x), N).item() == pytest.approx(expected, rel=1e-6)


def test_memory_update_momentum_then_renormalise_by_hand():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    update_memory(memory, torch.tensor([1, 2]), torch.tensor([[1.0, 0.0], [0.0, -0.5]]), 0.5)
    # row 1: 0.5·(0, 1) + 0.5·(1, 0) = (0.5, 0.5) → (1/√2, 1/√2); row 2: (0, 0.5 − 0.25) → (0, 1)
    r = 1 / math.sqrt(2)
    assert torch.allclose(memory, torch.tensor([[1.0, 0.0], [r, r], [0.0, 1.0]]))
    # the momentum weights the OLD row: 0.75·(0, 1) + 0.25·(1, 0) → (1, 3)/√10
    memory = torch.tensor([[0.0, 1.0]])
    update_memory(memory, torch.tensor([0]), torch.tensor([[1.0, 0.0]]), 0.75)
    assert torch.allclose(memory, torch.tensor([[1.0, 3.0]]) / math.sqrt(10))


def test_crd_objective_by_hand_z_fixed_after_first_batch_and_memory_updated():
    student, teacher = tiny_pair()
    obj = CRD(student, teacher, CRDConfig(teacher=["t"]), IN, num_train=20)
    assert obj.k == 19  # K = min(16384, N − 1)
    assert obj.crd.memory_s.shape == (20, 128) and (obj.crd.z == -1).all()
    obj.train()
    b = tiny_batch()
    mem_s, mem_t = obj.crd.memory_s.clone(), obj.crd.memory_t.clone()
    torch.manual_seed(5)
    out = obj(b, 0.0)
    assert set(out) == {"ce", "crd"} and all(torch.isfinite(v) for v in out.values())
    # recompute with plain ops: same negatives (same seed), embeddings, Z = mean(exp)·N
    torch.manual_seed(5)
    idx = torch.cat([b.index[:, None], sample_negatives(b.index, 20, 19)], 1)
    with torch.no_grad():
        _, (fs,) = tap_features(student, b.x, [1])
        _, (ft,) = tap_features(teacher.members[0], b.x, [2])
        vs = F.normalize(obj.crd.embed_s(fs.mean((2, 3))), dim=1)
        vt = F.normalize(obj.crd.embed_t(ft.mean((2, 3))), dim=1)
    es = torch.exp(torch.einsum("bkd,bd->bk", mem_t[idx], vs) / 0.07)  # student anchor, teacher memory
    et = torch.exp(torch.einsum("bkd,bd->bk", mem_s[idx], vt) / 0.07)
    z_s, z_t = es.mean() * 20, et.mean() * 20
    assert torch.allclose(obj.crd.z, torch.stack([z_s, z_t]), rtol=1e-5)

    def nce(e: torch.Tensor) -> torch.Tensor:
        c = 19 / 20 + 1e-7
        return -(torch.log(e[:, 0] / (e[:, 0] + c)).sum() + torch.log((19 / 20) / (e[:, 1:] + c)).sum()) / len(e)

    assert out["crd"].item() == pytest.approx(0.8 * (nce(es / z_s) + nce(et / z_t)).item(), rel=1e-5)
    assert out["ce"].item() == pytest.approx(F.cross_entropy(student(b.x), b.y).item(), rel=1e-5)
    # memory: batch rows = normalize(0.5·old + 0.5·v), other rows untouched
    assert torch.allclose(obj.crd.memory_s[b.index], F.normalize(0.5 * mem_s[b.index] + 0.5 * vs, dim=1), atol=1e-6)
    assert torch.allclose(obj.crd.memory_t[b.index], F.normalize(0.5 * mem_t[b.index] + 0.5 * vt, dim=1), atol=1e-6)
    rest = torch.ones(20, dtype=torch.bool)
    rest[b.index] = False
    assert torch.equal(obj.crd.memory_s[rest], mem_s[rest])
    z = obj.crd.z.clone()
    obj(tiny_batch(seed=2), 0.1)
    assert torch.equal(obj.crd.z, z)  # Z is frozen after the first batch


def test_crd_gradients_reach_student_and_embeddings_not_teacher():
    student, teacher = tiny_pair()
    obj = CRD(student, teacher, CRDConfig(teacher=["t"], kd_weight=1.0), IN, num_train=20)
    out = obj(tiny_batch(), 0.0)
    assert set(out) == {"ce", "crd", "kd"}
    sum(out.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.crd.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert set(obj.saved_modules()) == {"student", "crd"}
    assert {id(p) for p in obj.trainable_parameters()} == {
        id(p) for p in [*student.parameters(), *obj.crd.parameters()]
    }


def test_crd_kd_term_is_hinton_kd_at_t4():
    student, teacher = tiny_pair()
    obj = CRD(student, teacher, CRDConfig(teacher=["t"], kd_weight=1.0), IN, num_train=20)
    b = tiny_batch()
    zs, zt = student(b.x), teacher.members[0](b.x)
    p_t = F.softmax(zt / 4, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(zs / 4, 1))).sum(1).mean()
    assert obj(b, 0.0)["kd"].item() == pytest.approx(16 * kl.item(), rel=1e-5)


def test_crd_checkpoint_round_trip_and_resume_are_bit_identical():
    student, teacher = tiny_pair()
    obj = CRD(student, teacher, CRDConfig(teacher=["t"], nce_k=7), IN, num_train=20)
    obj.train()
    obj(tiny_batch(), 0.0)  # Z and some memory rows now set
    saved = state(obj.saved_modules())
    assert {"crd.memory_s", "crd.memory_t", "crd.z"} <= set(saved)
    student2, teacher2 = tiny_pair(seed=9)
    obj2 = CRD(student2, teacher, CRDConfig(teacher=["t"], nce_k=7), IN, num_train=20)
    obj2.train()
    for name, mod in obj2.saved_modules().items():
        mod.load_state_dict({k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(name + ".")})
    assert all(torch.equal(v, state(obj2.saved_modules())[k]) for k, v in saved.items())
    b = tiny_batch(seed=3)
    torch.manual_seed(11)
    l1 = obj(b, 0.5)
    torch.manual_seed(11)
    l2 = obj2(b, 0.5)
    assert all(torch.equal(l1[k], l2[k]) for k in l1)
    after1, after2 = state(obj.saved_modules()), state(obj2.saved_modules())
    assert all(torch.equal(after1[k], after2[k]) for k in after1)


def test_crd_user_errors():
    student, teacher = tiny_pair()
    obj = CRD(student, teacher, CRDConfig(teacher=["t"]), IN, num_train=20)
    b = tiny_batch()
    with pytest.raises(UserError, match="example indices"):
        obj(Batch(b.x, b.y), 0.0)
    with pytest.raises(UserError, match="training-set size"):
        CRD(student, teacher, CRDConfig(teacher=["t"]), IN, num_train=0)


# ------------------------------------------------------------------------------------- ReviewKD
def test_hcl_on_a_4x4_map_by_hand():
    d = torch.tensor([[2.0, 0, 1, 1], [0, 2, 1, 1], [0, 0, 3, -3], [0, 0, 3, -3]])
    ft = torch.ones(1, 1, 4, 4)
    fs = ft + d
    # full: Σd²/16 = 48/16 = 3; 2x2 block means (1, 1, 0, 0) → MSE 0.5; global mean 0.5 → 0.25;
    # the size 4 is skipped (4 ≥ H = 4), so weights 1, 0.5, 0.25 and the sum is divided by 1.75
    assert hcl_loss([fs], [ft]).item() == pytest.approx((3 + 0.5 * 0.5 + 0.25 * 0.25) / 1.75)
    # a 1x1 level is a plain MSE, and levels add up
    one_s, one_t = torch.tensor([[[[3.0]]]]), torch.tensor([[[[1.0]]]])
    assert hcl_loss([fs, one_s], [ft, one_t]).item() == pytest.approx(3.3125 / 1.75 + 4.0)
    # 8x8: pools 4, 2, 1 with weights 0.5, 0.25, 0.125; a constant offset c gives c² at every size
    assert hcl_loss([torch.full((2, 3, 8, 8), 2.0)], [torch.zeros(2, 3, 8, 8)]).item() == pytest.approx(4.0)
    f = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = hcl_loss([f], [f.detach().clone()])
    loss.backward()
    assert loss.item() == 0 and f.grad.abs().sum() == 0


def test_abf_fuses_with_sigmoid_attention_by_hand():
    abf = ABF(1, 1, 1, fuse=True).eval()
    with torch.no_grad():
        abf.conv1[0].weight.fill_(1.0)
        abf.conv2[0].weight.zero_()
        abf.conv2[0].weight[0, 0, 1, 1] = 1.0  # 3x3 conv = identity
        abf.att[0].weight.zero_()
        abf.att[0].bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # σ → 0.5 and 0.75
    for bn in (abf.conv1[1], abf.conv2[1]):
        bn.eps = 0.0  # eval BN with mean 0, var 1: identity
    x = torch.arange(4.0).view(1, 1, 2, 2)
    res = torch.tensor([[[[10.0]]]])
    out, new_res = abf(x, res, (2, 2))
    assert torch.allclose(new_res, 0.5 * x + 0.75 * 10.0) and torch.allclose(out, new_res)
    out, new_res = abf(x, res, (4, 4))  # resized (nearest) to the teacher's size, residual too
    assert out.shape == new_res.shape == (1, 1, 4, 4) and out[0, 0, 3, 3] == 0.5 * 3 + 7.5


def test_review_fusion_shapes_and_mid_width():
    fusion = ReviewFusion([8, 16, 24], [16, 32, 40], [(8, 8), (2, 2), (1, 1)])
    assert [a.att is None for a in fusion.abfs] == [False, False, True]  # the deepest level has no fusion
    assert all(a.conv1[0].out_channels == 24 for a in fusion.abfs)  # mid = min(512, deepest channels)
    outs = fusion([torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2), torch.randn(2, 24, 1, 1)])
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 8), (2, 32, 2, 2), (2, 40, 1, 1)]
    assert ReviewFusion([8, 600], [8, 8], [(2, 2), (1, 1)]).abfs[0].conv1[0].out_channels == 512


def test_reviewkd_levels_on_resnet8x4_from_resnet32x4():
    torch.manual_seed(0)
    s, t = create_model("resnet8x4", 100, 3, 32), Teacher(create_model("resnet32x4", 100, 3, 32))
    obj = ReviewKD(s, t, ReviewKDConfig(teacher=["t"]), (3, 32, 32))
    abfs = obj.review.abfs
    assert [a.conv1[0].in_channels for a in abfs] == [64, 128, 256, 256]
    assert [a.conv2[0].out_channels for a in abfs] == [64, 128, 256, 256]
    assert obj.review.out_sizes == [(32, 32), (16, 16), (8, 8), (1, 1)]
    assert abfs[0].conv1[0].out_channels == 256


def test_reviewkd_objective_gradients_warmup_and_round_trip():
    student, teacher = tiny_pair()
    obj = ReviewKD(student, teacher, ReviewKDConfig(teacher=["t"]), IN, epochs=40)
    assert obj.s_idx == [0, 1, 1] and obj.t_idx == [0, 2, 2]  # two stage maps + the pooled level
    obj.train()
    b = tiny_batch()
    full, half, zero = obj(b, 1.0), obj(b, 0.25), obj(b, 0.0)  # epoch 40, 10 (of 20 warm-up), 0
    assert set(full) == {"ce", "review"} and all(torch.isfinite(v) for v in full.values())
    assert half["review"].item() == pytest.approx(0.5 * full["review"].item(), rel=1e-5)
    assert zero["review"].item() == 0 and full["review"].item() > 0
    sum(full.values()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.review.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    ids = {id(p) for p in obj.trainable_parameters()}
    assert ids == {id(p) for p in [*student.parameters(), *obj.review.parameters()]}
    saved = state(obj.saved_modules())
    assert set(obj.saved_modules()) == {"student", "review"}
    student2, _ = tiny_pair(seed=4)
    obj2 = ReviewKD(student2, teacher, ReviewKDConfig(teacher=["t"]), IN, epochs=40)
    for name, mod in obj2.saved_modules().items():
        mod.load_state_dict({k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(name + ".")})
    assert all(torch.equal(v, state(obj2.saved_modules())[k]) for k, v in saved.items())
    obj.eval(), obj2.eval()
    assert torch.equal(obj(b, 1.0)["review"], obj2(b, 1.0)["review"])


def test_reviewkd_rejects_flat_explicit_pairs():
    torch.manual_seed(0)
    s = create_model("cnn:8-16", 10, 1, 8, fc=16)
    t = Teacher(create_model("cnn:16-16", 10, 1, 8, fc=16))
    with pytest.raises(UserError, match="convolutional"):
        ReviewKD(s, t, ReviewKDConfig(teacher=["t"], pairs=[(1, 1), (2, 2)]), IN)
    obj = ReviewKD(s, t, ReviewKDConfig(teacher=["t"]), IN)  # auto: the flat fc pair is dropped
    assert obj.s_idx == [0, 1, 2] and obj.review.out_sizes[-1] == (1, 1)


# ------------------------------------------------------------------------ resume through Trainer
class Killed(Exception):
    pass


@pytest.mark.parametrize("method", ["crd", "reviewkd"])
def test_resume_through_the_trainer_is_bit_identical(tmp_path, method):
    from distillab.config import DataConfig, OptimConfig, TrainConfig
    from distillab.data import prepare_data
    from distillab.engine.trainer import Trainer

    data = prepare_data(DataConfig(source="digits", val_size=200, batch_size=128), 0)
    cfg = TrainConfig(epochs=3, optim=OptimConfig(lr=0.05), checkpoint_every=1)
    torch.manual_seed(7)
    teacher = Teacher(create_model("cnn:16-16-32", 10, 1, 8))

    def build(seed):
        torch.manual_seed(seed)
        s = create_model("cnn:8-16", 10, 1, 8)
        if method == "crd":
            return CRD(s, teacher, CRDConfig(teacher=["t"], nce_k=256), IN, num_train=len(data.train.y))
        return ReviewKD(s, teacher, ReviewKDConfig(teacher=["t"], warmup=2), IN, epochs=3)

    full = build(0)
    Trainer(full, data.train, cfg, tmp_path / "full", seed=0).fit()

    def die(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        Trainer(build(0), data.train, cfg, tmp_path / "cut", seed=0, on_epoch=die).fit()
    resumed = build(123)  # everything (memories, Z, ABFs) must come from the checkpoint
    Trainer(resumed, data.train, cfg, tmp_path / "cut", seed=0).fit()
    a, b = state(full.saved_modules()), state(resumed.saved_modules())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
