"""BiT: weight standardisation, GN+WS batch independence, ResNet-v2 structure, the HyperRule,
MixUp, gradient accumulation, and the upstream → downstream study end to end."""

import pytest
import torch
import yaml

from distillab import bit_hyperrule as hr
from distillab.cli import main
from distillab.config import DataConfig, OptimConfig, TrainConfig
from distillab.data import prepare_data
from distillab.engine.trainer import Trainer
from distillab.errors import UserError
from distillab.data.batch import Batch
from distillab.methods import Supervised, SupervisedConfig
from distillab.models import create_model
from distillab.models.bit import PreActBottleneck, StdConv2d, _Parts

SMALL = dict(base_width=8, groups=4)


def test_weight_standardisation_per_channel():
    conv = StdConv2d(5, 7, 3)
    torch.nn.init.normal_(conv.weight, mean=3.0, std=5.0)
    w = conv.standardized_weight()
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(7), atol=1e-5)
    assert torch.allclose(w.var(dim=(1, 2, 3), unbiased=False), torch.ones(7), atol=1e-4)


def test_gn_ws_forward_is_batch_size_independent():
    torch.manual_seed(0)
    m = create_model("bit:R14x1", 5, 1, 16, zero_head=False, **SMALL).train()
    x = torch.randn(6, 1, 16, 16)
    assert torch.allclose(m(x[:1]), m(x)[:1], atol=1e-5)
    twin = create_model("bit:R14x1", 5, 1, 16, zero_head=False, norm="bn", **SMALL).train()
    assert not torch.allclose(twin(x[:2]), twin(x)[:2], atol=1e-3)  # BatchNorm mixes the batch


def test_resnet_v2_structure_and_zero_head():
    m = create_model("bit:R26x1", 3, 3, 32, **SMALL)
    units = [b for b in m.blocks if isinstance(b, PreActBottleneck)]
    assert len(units) == 8
    first_of_stage2 = units[2]
    assert first_of_stage2.conv2.stride == (2, 2) and first_of_stage2.conv1.stride == (1, 1)
    assert first_of_stage2.downsample is not None and isinstance(first_of_stage2.gn1, torch.nn.GroupNorm)
    assert torch.count_nonzero(m(torch.randn(2, 3, 32, 32))) == 0  # zero_head
    assert sum(p.numel() for p in create_model("bit:R50x1", 1000, 3, 224).parameters()) == 25_549_352


def test_preactivation_shortcut_uses_preactivated_input():
    unit = PreActBottleneck(_Parts("gn", 4), cin=8, cout=16, cmid=4, stride=1)
    x = torch.randn(2, 8, 5, 5)
    pre = torch.relu(unit.gn1(x))
    body = unit.conv3(torch.relu(unit.gn3(unit.conv2(torch.relu(unit.gn2(unit.conv1(pre)))))))
    assert torch.allclose(unit(x), body + unit.downsample(pre), atol=1e-5)


@pytest.mark.parametrize("n, schedule, mixup", [
    (1, [100, 200, 300, 400, 500], 0.0), (19_999, [100, 200, 300, 400, 500], 0.0),
    (20_000, [500, 3000, 6000, 9000, 10_000], 0.1), (499_999, [500, 3000, 6000, 9000, 10_000], 0.1),
    (500_000, [500, 6000, 12_000, 18_000, 20_000], 0.1), (1_281_167, [500, 6000, 12_000, 18_000, 20_000], 0.1),
])
def test_hyperrule_table(n, schedule, mixup):
    assert hr.get_schedule(n) == schedule and hr.get_mixup(n) == mixup


def test_hyperrule_resolution_lr_and_errors():
    assert hr.get_resolution(32, 32) == (160, 128) and hr.get_resolution(95, 96) == (160, 128)
    assert hr.get_resolution(96, 96) == (512, 480) and hr.get_resolution(224, 224) == (512, 480)
    assert hr.get_lr(50, 1000) == pytest.approx(0.0015) and hr.get_lr(150, 1000) == pytest.approx(0.003)
    assert hr.get_lr(250, 1000) == pytest.approx(0.0003) and hr.get_lr(450, 1000) == pytest.approx(3e-6)
    assert hr.get_lr(500, 1000) is None
    # Decay points (schedule [100, 200, 300, 400, 500] for < 20k examples): the official get_lr
    # decays once ``s < step``, so the step *at* a decay point still uses the previous lr.
    assert hr.get_lr(200, 1000) == pytest.approx(0.003) and hr.get_lr(201, 1000) == pytest.approx(0.0003)
    assert hr.get_lr(300, 1000) == pytest.approx(0.0003) and hr.get_lr(400, 1000) == pytest.approx(3e-5)
    with pytest.raises(UserError, match="dataset size 0"):
        hr.get_schedule(0)
    with pytest.raises(UserError, match="image size"):
        hr.get_resolution(0, 32)
    t, steps = hr.train_config(1000, 1.0)  # 500 steps = 10 epochs of 50
    assert (t.epochs, steps) == (10, 50) and t.optim.milestones == pytest.approx([0.4, 0.6, 0.8])
    assert t.optim.warmup_epochs == pytest.approx(2) and t.optim.weight_decay == 0 and t.optim.momentum == 0.9
    assert t.optim.lr == 0.003  # the rule's lr, whatever the batch
    t, steps = hr.train_config(30_000, 0.2)  # 2,000 of the 10,000 steps; decays at 30/60/90 %
    assert t.epochs * steps == 2000 and t.optim.milestones == pytest.approx([0.3, 0.6, 0.9])


def test_mixup_mixes_inputs_and_targets():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    obj = Supervised(model, SupervisedConfig(mixup_alpha=0.4))
    x, y = torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))
    torch.manual_seed(5)
    loss = obj(Batch(x, y), 0.0)["ce"]
    torch.manual_seed(5)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    perm = torch.randperm(8)
    z = model(lam * x + (1 - lam) * x[perm])
    ce = torch.nn.functional.cross_entropy
    assert loss.item() == pytest.approx((lam * ce(z, y) + (1 - lam) * ce(z, y[perm])).item(), rel=1e-5)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_gradient_accumulation_matches_a_big_batch(tmp_path, schedule):
    # 224 examples: batch 64 gives 3 full batches and one of 32; batch 32 x 2 accumulated gives 3
    # full windows and a short one (one batch). The lr schedule must count optimiser steps, or the
    # accumulated run sees a different lr at each step under cosine/step schedules.
    def train(batch, acc):
        data = prepare_data(DataConfig(source="digits", val_size=0, train_subset=224, batch_size=batch), 0)
        torch.manual_seed(0)
        obj = Supervised(create_model("mlp:16", 10, 1, 8), SupervisedConfig())
        cfg = TrainConfig(epochs=3, accumulate=acc,
                          optim=OptimConfig(lr=0.1, momentum=0.9, schedule=schedule, milestones=[0.4, 0.7]))
        Trainer(obj, data.train, cfg, tmp_path / f"{batch}-{acc}", seed=0).fit()
        return obj.student.state_dict()

    big, small = train(64, 1), train(32, 2)
    # same examples in the same order, so 2 x 32 accumulated == 1 x 64 at every step
    for k in big:
        assert torch.allclose(big[k], small[k], atol=1e-5), k


@pytest.mark.slow
def test_bit_study_end_to_end(tmp_path, capsys):
    half = lambda p: {"source": "digits", "val_size": 50, "batch_size": 32,  # noqa: E731
                      "classes": {"split": "random", "seed": 0, "part": p}}
    cfg = {"recipe": "bit", "upstream": {"data": half("A"), "train": {"epochs": 2, "optim": {"lr": 0.05}}},
           "downstream": dict(half("B"), batch_size=8), "model": {"name": "bit:R14x1", "kwargs": SMALL},
           "shots": [1, "all"], "hyperrule": {"schedule_scale": 0.04, "resolution": "native"}, "seeds": [0],
           "tuning": {"lrs": [0.01], "lengths": [1], "shots": [1]}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    # Equal effort: the pre-trained arm runs the same grid point as the from-scratch one, and the
    # primary claim compares the two tuned arms.
    for arm in ("GN+WS-source", "GN+WS-none"):
        assert (tmp_path / "o" / arm / "1-shot" / "lr0.01-x1" / "seed0" / "summary.json").is_file()
    assert not (tmp_path / "o" / "BN-source" / "1-shot" / "lr0.01-x1").exists()
    md = (tmp_path / "o" / "results.md").read_text()
    for row in ("GN+WS, upstream: source (lr, length tuned on val)", "BN, upstream: source (rule)",
                "GN+WS, upstream: none (lr, length tuned on val)", "1-shot", "all",
                "primary: source − none (both tuned), 1-shot"):
        assert row in md
    assert (tmp_path / "o" / "shots.png").is_file()
    one_shot = yaml.safe_load((tmp_path / "o" / "GN+WS-source" / "1-shot" / "seed0" / "config.yaml").read_text())
    assert one_shot["data"]["shots"] == 1 and one_shot["train"]["optim"]["weight_decay"] == 0.0


def test_bit_recipe_rejects_other_models(tmp_path, capsys):
    cfg = {"recipe": "bit", "upstream": {"data": {"source": "digits"}}, "downstream": {"source": "digits"},
           "model": {"name": "mlp:8"}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "bit:R<depth>x<width>" in capsys.readouterr().err


def test_checkpoint_of_another_width_is_rejected():
    from distillab.transfer import copy_blocks

    narrow = create_model("bit:R14x1", 5, 1, 16, **SMALL)
    wide = create_model("bit:R14x2", 5, 1, 16, **SMALL)
    with pytest.raises(UserError, match="does not match"):
        copy_blocks(wide, narrow, 3)
    deeper = create_model("bit:R26x1", 5, 1, 16, **SMALL)
    copy_blocks(deeper, narrow, 2)  # root + first unit have the same shapes: fine
    with pytest.raises(UserError, match="does not match"):
        copy_blocks(deeper, narrow, 3)  # R14's unit 2 opens stage 2; R26's is still in stage 1
