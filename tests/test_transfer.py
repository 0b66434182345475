"""Transfer surgery: copied blocks, frozen bit for bit (BatchNorm statistics too), fine-tuned
blocks changed, unfreeze schedule, per-block learning rates, class splits, bad input."""

import pytest
import torch

from distillab.config import ClassSplitConfig, DataConfig, OptimConfig, TrainConfig
from distillab.data import load_source
from distillab.data.splits import class_halves, class_split, few_shot_indices
from distillab.engine.checkpoint import load_model
from distillab.engine.run import RunSpec, execute_run
from distillab.errors import UserError
from distillab.models import create_model, get_blocks
from distillab.transfer import copy_blocks, layerwise_param_groups, set_frozen

DATA = DataConfig(source="digits", val_size=100, batch_size=64)
MODEL = {"name": "cnn:8-16-16", "kwargs": {"norm": "bn", "fc": 32}}


def _spec(epochs=2, **kw):
    return RunSpec(data=DATA, model=MODEL, train=TrainConfig(epochs=epochs, optim=OptimConfig(lr=0.05)), **kw)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("src") / "seed0"
    execute_run(_spec(), 0, d)
    return d


def _blocks_state(model, idx):
    return {f"{i}.{k}": v.clone() for i in idx for k, v in get_blocks(model)[i].state_dict().items()}


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_blocks_bit_identical_finetuned_changed(tmp_path, source_run, freeze):
    src = load_model(source_run)
    copied = _blocks_state(src, range(2))
    run = tmp_path / "t"
    execute_run(_spec(init={"source": str(source_run), "blocks": 2, "freeze": freeze}), 1, run)
    out = load_model(run)
    after = _blocks_state(out, range(2))
    assert any("running_mean" in k for k in copied)  # BatchNorm statistics are part of the check
    same = all(torch.equal(copied[k], after[k]) for k in copied)
    assert same is freeze
    if not freeze:
        assert not torch.equal(copied["0.0.weight"], after["0.0.weight"])
    # blocks above n were trained from a fresh init either way
    assert not torch.equal(get_blocks(src)[2][0].weight, get_blocks(out)[2][0].weight)


def test_random_frozen_control_keeps_random_init(tmp_path):
    torch.manual_seed(3)
    init = _blocks_state(create_model(MODEL["name"], 10, 1, 8, **MODEL["kwargs"]), range(2))
    run = tmp_path / "c"
    execute_run(_spec(init={"source": None, "blocks": 2, "freeze": True}), 3, run)
    after = _blocks_state(load_model(run), range(2))
    weights = [k for k in init if "running" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(init[k], after[k]) for k in weights)  # random weights, untouched
    # BatchNorm statistics were re-estimated on the training images (well-conditioned control)
    # before training, then stayed frozen: no longer the initial identity
    assert not torch.equal(init["0.1.running_var"], after["0.1.running_var"])


def test_unfreeze_schedule_and_norm_mode():
    m = create_model(MODEL["name"], 10, 1, 8, **MODEL["kwargs"])
    set_frozen(m, range(2))
    m.train()
    bn0 = get_blocks(m)[0][1]
    assert not bn0.training and not bn0.weight.requires_grad
    assert get_blocks(m)[2][1].training
    set_frozen(m, range(2), frozen=False)
    assert bn0.training and bn0.weight.requires_grad


def test_unfreeze_at_epoch_trains_copied_blocks(tmp_path, source_run):
    src = load_model(source_run)
    run = tmp_path / "u"
    execute_run(_spec(epochs=2, init={"source": str(source_run), "blocks": 2, "freeze": True, "unfreeze_at": 1}),
                0, run)
    assert not torch.equal(get_blocks(src)[0][0].weight, get_blocks(load_model(run))[0][0].weight)


def test_layerwise_groups():
    m = create_model("mlp:8-8-8", 3, 1, 4)
    groups = layerwise_param_groups(m, 0.1, 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


def test_copy_errors():
    a = create_model("cnn:8-16", 10, 1, 8)
    with pytest.raises(UserError, match="out of range"):
        copy_blocks(a, create_model("cnn:8-16", 10, 1, 8), 3)
    with pytest.raises(UserError, match="does not match"):
        copy_blocks(a, create_model("cnn:4-16", 10, 1, 8), 1)


def test_transfer_to_other_class_count_copies_blocks_only(tmp_path, source_run):
    spec = _spec(init={"source": str(source_run), "blocks": 3, "freeze": True}).model_copy(
        update={"data": DATA.model_copy(update={"classes": ClassSplitConfig(split="random", part="B")})})
    s = execute_run(spec, 0, tmp_path / "b")
    assert load_model(tmp_path / "b").head.out_features == 5 and s["test_acc"] > 0.2


def test_class_halves():
    fm = load_source("digits")
    a, b = class_halves(fm, ClassSplitConfig(split="random", seed=1))
    assert sorted(a + b) == list(range(10)) and len(a) == 5
    assert class_halves(fm, ClassSplitConfig(split="random", seed=1)) == (a, b)
    half = class_split(fm, ClassSplitConfig(split="explicit", a=[3, 7], part="A"))
    assert half.classes == ["3", "7"] and set(half.y_train.tolist()) == {0, 1}
    assert len(half.x_train) == int(((fm.y_train == 3) | (fm.y_train == 7)).sum())


def test_semantic_split_fashion_names():
    from distillab.data.sources import FASHION_CLASSES, Dataset

    x = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    ds = Dataset("fashion-mnist", x, torch.arange(10), x, torch.arange(10), FASHION_CLASSES)
    b = class_split(ds, ClassSplitConfig(split="semantic", part="B"))
    assert b.classes == ["Trouser", "Sandal", "Sneaker", "Bag", "Ankle boot"]


@pytest.mark.parametrize("cfg, msg", [
    (ClassSplitConfig(split="explicit", a=["dragon"]), "unknown class"),
    (ClassSplitConfig(split="explicit", a=list(range(10))), "half B empty"),
    (ClassSplitConfig(split="semantic"), "no semantic split"),
])
def test_bad_splits(cfg, msg):
    with pytest.raises(UserError, match=msg):
        class_halves(load_source("digits"), cfg)


def test_few_shot():
    y = torch.arange(5).repeat(20)
    idx = few_shot_indices(y, 3, seed=0)
    assert torch.bincount(y[idx]).tolist() == [3] * 5


@pytest.mark.parametrize("name", ["timm:resnet10t", "torchvision:resnet18"])
def test_transfer_and_freeze_external_models(name):
    src, tgt = create_model(name, 4, 1, 16), create_model(name, 6, 1, 16)
    torch.manual_seed(0)
    with torch.no_grad():  # a "trained" source: every weight and BN statistic unlike a fresh init
        for t in src.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1 + 0.5)
    copy_blocks(tgt, src, 2)
    set_frozen(tgt, range(2))
    for i, (tb, sb) in enumerate(zip(get_blocks(tgt), get_blocks(src), strict=True)):
        ts, ss = tb.state_dict(), sb.state_dict()
        assert ts, i
        copied = all(torch.equal(ts[k], ss[k]) for k in ts if ts[k].is_floating_point())
        assert copied == (i < 2), f"block {i}: copied={copied}"  # blocks 0-1 copied, the rest untouched
    frozen = [p for b in get_blocks(tgt)[:2] for p in b.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    tgt.train()
    assert all(not m.training for b in get_blocks(tgt)[:2] for m in b.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
