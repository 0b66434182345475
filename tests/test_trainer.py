"""Trainer: schedules, learning on real data, resume identity, frozen teacher."""

import pytest
import torch

from distillab.config import DataConfig, OptimConfig, TrainConfig
from distillab.data import prepare_data
from distillab.engine.trainer import Trainer, evaluate, lr_factor
from distillab.methods import KD, KDConfig, Supervised, SupervisedConfig, Teacher
from distillab.models import create_model


def test_lr_schedules():
    cos = OptimConfig(schedule="cosine", warmup_epochs=1)
    assert lr_factor(0, 100, 10, cos) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, cos) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, cos) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, cos) == pytest.approx(0.5)
    step = OptimConfig(schedule="step", milestones=[0.5, 0.75], gamma=0.1)
    assert [lr_factor(s, 100, 10, step) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, .1, .1, .01, .01])
    assert lr_factor(70, 100, 10, OptimConfig(schedule="constant")) == 1.0


def _digits(seed=0, batch=64):
    return prepare_data(DataConfig(source="digits", val_size=200, batch_size=batch), seed)


def _supervised(seed=0, dropout=0.1):
    torch.manual_seed(seed)
    return Supervised(create_model("mlp:64-64", 10, 1, 8, dropout=dropout), SupervisedConfig())


def test_training_beats_chance_on_digits(tmp_path):
    data = _digits()
    obj = _supervised()
    Trainer(obj, data.train, TrainConfig(epochs=5, optim=OptimConfig(lr=0.05)), tmp_path, seed=0, val=data.val).fit()
    assert evaluate(obj.student, data.test)["acc"] > 0.85  # chance is 0.10


class Killed(Exception):
    pass


def test_resume_is_identical_to_uninterrupted(tmp_path):
    cfg = TrainConfig(epochs=4, optim=OptimConfig(lr=0.05, schedule="cosine", warmup_epochs=1), checkpoint_every=1)
    data = _digits()
    full = _supervised()
    Trainer(full, data.train, cfg, tmp_path / "full", seed=0, val=data.val).fit()

    def die(record):
        if record["epoch"] == 2:
            raise Killed

    first = _supervised()
    with pytest.raises(Killed):
        Trainer(first, data.train, cfg, tmp_path / "cut", seed=0, val=data.val, on_epoch=die).fit()
    resumed = _supervised(seed=123)  # fresh process: different init, everything must come from the checkpoint
    history = Trainer(resumed, data.train, cfg, tmp_path / "cut", seed=0, val=data.val).fit()
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for (k, a), (_, b) in zip(full.student.state_dict().items(), resumed.student.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_teacher_is_frozen_and_in_eval_mode(tmp_path):
    data = _digits()
    torch.manual_seed(0)
    teacher_net = create_model("mlp:64", 10, 1, 8, dropout=0.5)
    before = {k: v.clone() for k, v in teacher_net.state_dict().items()}
    teacher = Teacher(teacher_net)
    obj = KD(create_model("mlp:32", 10, 1, 8), teacher, KDConfig(temperature=4, alpha=0.9, teacher=["x"]))
    obj.train()  # what the trainer does every epoch
    assert not teacher_net.training and not teacher.training
    x = next(iter(data.train)).x
    assert torch.equal(teacher.probs(x), teacher.probs(x))  # dropout off: deterministic soft targets
    tr = Trainer(obj, data.train, TrainConfig(epochs=2, optim=OptimConfig(lr=0.1)), tmp_path, seed=0)
    opt_params = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in teacher_net.parameters()}
    tr.fit()
    for k, v in teacher_net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert "teacher" not in obj.saved_modules()


def test_bf16_autocast_and_channels_last_train_with_fp32_master_weights(tmp_path):
    data = _digits()
    states = {}
    for prec, cl in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        obj = Supervised(create_model("cnn:8-16", 10, 1, 8), SupervisedConfig())
        cfg = TrainConfig(epochs=3, precision=prec, channels_last=cl, optim=OptimConfig(lr=0.05))
        Trainer(obj, data.train, cfg, tmp_path / prec, seed=0).fit()
        assert all(p.dtype == torch.float32 for p in obj.student.parameters())  # master weights stay fp32
        assert evaluate(obj.student, data.test)["acc"] > 0.8
        states[prec] = obj.student.state_dict()
    # bf16 really ran: the weights differ from the fp32 run's (same init, data and order).
    assert any(not torch.equal(states["fp32"][k], states["bf16"][k]) for k in states["fp32"])


def test_checkpoints_by_time_and_at_the_end_by_default(tmp_path, monkeypatch):
    """Issue #25: not every epoch (the demo wrote ~5.9 GB): after the last epoch, and once
    ``checkpoint_minutes`` have passed."""
    import distillab.engine.callbacks as cb

    saved = []
    real = cb.save_train_state
    monkeypatch.setattr(
        cb, "save_train_state", lambda run_dir, epoch, *a: saved.append(epoch) or real(run_dir, epoch, *a)
    )
    data = _digits()
    Trainer(_supervised(), data.train, TrainConfig(epochs=3), tmp_path / "a", seed=0).fit()
    assert saved == [3]
    saved.clear()
    clock = iter(range(0, 10_000, 400))  # each call 400 s later: past the 10-minute mark every other epoch
    monkeypatch.setattr(cb, "_clock", lambda: next(clock))
    Trainer(_supervised(), data.train, TrainConfig(epochs=4), tmp_path / "b", seed=0).fit()
    assert saved == [2, 4]
