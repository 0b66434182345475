"""Every distillation method end to end through the one trainer: trains on real digits, its
connectors (regressors, embedding heads, memory banks, fusion modules) resume bit-identically,
the teacher never changes — and the ``benchmark`` recipe puts them in one table."""

import json

import pytest
import torch
import yaml

from distillab.cli import main
from distillab.config import DataConfig, OptimConfig, TrainConfig
from distillab.data import prepare_data
from distillab.engine.trainer import Trainer
from distillab.methods import METHODS, Context, Teacher, build_objective
from distillab.models import create_model

# name → extra config keys (the defaults are the CIFAR-100 ones)
ZOO = {"kd": {}, "kd-ls": {"logit_standardize": True, "temperature": 2.0}, "at": {}, "pkt": {}, "sp": {},
       "rkd": {}, "crd": {"nce_k": 64}, "dkd": {"warmup": 1.0}, "dist": {}, "reviewkd": {"warmup": 1.0}}


def _objective(name: str, teacher_net, data, seed: int):
    torch.manual_seed(seed)
    student = create_model("cnn:4-8", 10, 1, 8)
    keys = dict(ZOO[name])
    cfg = METHODS[name.split("-")[0]].config.model_validate({"name": name.split("-")[0], **keys})
    ctx = Context(in_shape=data.shape, teacher=Teacher(teacher_net), num_train=len(data.train.y), epochs=3)
    return build_objective(cfg, student, ctx)


class Killed(Exception):
    pass


@pytest.mark.parametrize("name", list(ZOO))
def test_method_trains_and_resumes_bit_identically(name, tmp_path):
    data = prepare_data(DataConfig(source="digits", val_size=200, batch_size=64), 0)
    torch.manual_seed(100)
    teacher_net = create_model("cnn:8-16", 10, 1, 8)
    before = {k: v.clone() for k, v in teacher_net.state_dict().items()}
    cfg = TrainConfig(epochs=3, optim=OptimConfig(lr=0.05, schedule="cosine"), checkpoint_every=1)

    full = _objective(name, teacher_net, data, 0)
    history = Trainer(full, data.train, cfg, tmp_path / "full", seed=0).fit()
    assert all(all(v == v and abs(v) < 1e6 for k, v in h.items() if k.startswith("train_")) for h in history)
    assert len(full.saved_modules()) >= 1

    def die(record):
        if record["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        Trainer(_objective(name, teacher_net, data, 0), data.train, cfg, tmp_path / "cut", seed=0, on_epoch=die).fit()
    resumed = _objective(name, teacher_net, data, 7)  # a fresh process: everything must come from the checkpoint
    Trainer(resumed, data.train, cfg, tmp_path / "cut", seed=0).fit()
    for mod_name, mod in full.saved_modules().items():
        other = resumed.saved_modules()[mod_name].state_dict()
        for k, v in mod.state_dict().items():
            assert torch.equal(v, other[k]), f"{mod_name}.{k}"
    for k, v in teacher_net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_benchmark_recipe_table(tmp_path, capsys):
    cfg = {
        "recipe": "benchmark",
        "data": {"source": "digits", "val_size": 200, "batch_size": 64},
        "seeds": [0, 1],
        "teacher": {"model": {"name": "cnn:8-16"}, "train": {"epochs": 3, "optim": {"lr": 0.05}}},
        "student": {"model": {"name": "cnn:4-8"}, "train": {"epochs": 2, "optim": {"lr": 0.05}}},
        "methods": {"KD": {"name": "kd"}, "AT": {"name": "at"}, "CRD": {"name": "crd", "nce_k": 32}},
    }
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    first_table = md.split("| method")[1].split("\n\n")[0]
    lines = [
        "| method" + first_table.splitlines()[0],
        *(ln for ln in first_table.splitlines()[1:] if ln.startswith("| ")),
    ]
    assert len(lines) == 1 + 2 + 3  # header, teacher, student, 3 methods
    names = [ln.split("|")[1].strip() for ln in lines[1:]]
    assert names[:2] == ["Teacher", "Student"] and set(names[2:]) == {"KD (primary)", "AT", "CRD"}
    cells = [ln.split("|")[3] for ln in lines[3:]]
    measured = [c for c in cells if "±" in c]  # a method whose runs all collapsed shows "— (2 collapsed)"
    assert cells[:len(measured)] == measured  # ... and comes last
    accs = [float(c.split("±")[0]) for c in measured]
    assert accs == sorted(accs, reverse=True)  # methods sorted by accuracy
    kd = yaml.safe_load((out / "KD" / "seed1" / "config.yaml").read_text())
    assert kd["method"]["teacher"] == [str(out / "teacher" / "seed1")] and kd["seed"] == 1
    crd = json.loads((out / "CRD" / "seed0" / "summary.json").read_text())
    assert crd["params"] == json.loads((out / "student" / "seed0" / "summary.json").read_text())["params"]


def test_benchmark_rejects_a_teacher_key(tmp_path, capsys):
    cfg = {"recipe": "benchmark", "teacher": {"model": {"name": "mlp:8"}}, "student": {"model": {"name": "mlp:4"}},
           "methods": {"KD": {"name": "kd", "teacher": ["x"]}}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "teacher" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["rkd", "pkt", "sp", "at", "crd"])
def test_relational_losses_stay_fp32_under_bf16_autocast(name):
    # Autocast would run Gram matrices / distances / contrast scores in bfloat16 (8-bit mantissa);
    # the losses must match the fp32 computation closely and come back as float32.
    data = prepare_data(DataConfig(source="digits", val_size=200, batch_size=64), 0)
    torch.manual_seed(100)
    teacher_net = create_model("cnn:8-16", 10, 1, 8)
    batch = next(iter(data.train))
    values = {}
    for bf16 in (False, True):
        obj = _objective(name, teacher_net, data, 0)
        obj.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = obj(batch, 0.5)
        key = [k for k in out if k not in ("ce", "kd")]
        assert all(out[k].dtype == torch.float32 for k in key), {k: out[k].dtype for k in key}
        values[bf16] = sum(out[k] for k in key).item()
    assert values[True] == pytest.approx(values[False], rel=0.05)


@pytest.mark.parametrize("name", ["at", "crd", "reviewkd", "sp"])
def test_feature_methods_tap_timm_and_torchvision_blocks(name):
    # Taps are block indices, so a feature method runs on timm / torchvision models as on the zoo's.
    torch.manual_seed(0)
    student = create_model("timm:resnet10t", 10, 1, 32)
    teacher = create_model("torchvision:resnet18", 10, 1, 32)
    cfg = METHODS[name].config.model_validate({"name": name, **({"nce_k": 16} if name == "crd" else {})})
    ctx = Context(in_shape=(1, 32, 32), teacher=Teacher(teacher), num_train=64, epochs=2)
    obj = build_objective(cfg, student, ctx)
    from distillab.data.batch import Batch

    out = obj(Batch(torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,)), torch.arange(8)), 0.5)
    loss = sum(out.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
