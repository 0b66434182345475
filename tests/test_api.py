"""The Python API with a user's own modules and datasets, and the runnable examples."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import distillab
from distillab.errors import UserError
from distillab.methods import KD, KDConfig, Teacher

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def _digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])


def _net(hidden):
    torch.manual_seed(hidden)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_import_is_light_and_exports_the_api():
    code = "import sys, distillab; print('torch' in sys.modules); print(callable(distillab.distill))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # torch loads on first use of the API, not on import


def test_distill_own_modules_from_own_dataset(tmp_path):
    train, test = _digits()
    teacher = distillab.train(_net(128), train, epochs=6, batch_size=64).model
    assert distillab.evaluate(teacher, test)["acc"] > 0.85
    student = _net(16)
    result = distillab.distill(student, teacher, train, method="kd", temperature=4.0, alpha=0.9, epochs=6,
                               batch_size=64, val_data=test, run_dir=tmp_path / "kd")
    assert result.model is student and len(result.history) == 6 and result.val["acc"] > 0.8
    # A second call with the same run_dir resumes: nothing left to train, weights from the checkpoint.
    again = distillab.distill(_net(16), teacher, train, method="kd", temperature=4.0, alpha=0.9, epochs=6,
                              batch_size=64, run_dir=tmp_path / "kd")
    for a, b in zip(student.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_run_dir_of_another_run_is_refused(tmp_path):
    # A sweep reusing one run_dir must not get the previous call's weights back as its result.
    train, _ = _digits()
    distillab.train(_net(16), train, epochs=1, lr=0.05, run_dir=tmp_path / "r")
    with pytest.raises(UserError, match="another run"):
        distillab.train(_net(16), train, epochs=1, lr=0.1, run_dir=tmp_path / "r")


def test_index_based_method_on_a_user_dataset():
    # CRD needs each example's index: the API's loader yields it for any map-style dataset.
    train, _ = _digits()
    teacher = distillab.create_model("cnn:8-16", 10, 1, 8)
    student = distillab.create_model("cnn:4-8", 10, 1, 8)
    result = distillab.distill(student, teacher, train, method="crd", nce_k=64, epochs=1, batch_size=64)
    losses = {k: v for k, v in result.history[0].items() if k.startswith("train_")}
    assert "train_crd" in losses and all(0 < v < 1e4 for v in losses.values())


def test_a_users_own_dataloader_and_ensemble_teacher():
    train, test = _digits()
    loader = DataLoader(train, batch_size=64, shuffle=True)  # no set_epoch: used as is
    teachers = [distillab.train(_net(h), train, epochs=6, batch_size=64, lr=0.1).model for h in (64, 96)]
    result = distillab.distill(_net(16), teachers, loader, method="kd", epochs=6, lr=0.1)
    assert distillab.evaluate(result.model, test)["acc"] > 0.7


def test_objectives_from_modules_without_paths():
    s, t = _net(8), _net(32)
    obj = KD(s, Teacher(t), KDConfig(temperature=4, alpha=0.9))  # no teacher path needed
    out = obj(distillab.Batch(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])), 0.0)
    assert set(out) == {"kd", "ce"}


def test_api_errors_are_one_line():
    train, _ = _digits()
    with pytest.raises(UserError, match="unknown"):
        distillab.distill(_net(8), _net(8), train, method="nope")
    with pytest.raises(UserError, match="temperature"):
        distillab.distill(_net(8), _net(8), train, method="kd", temperature=-1)
    with pytest.raises(UserError, match="needs a teacher"):
        distillab.distill(_net(8), None, train, method="kd")


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(path, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(path), str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "accuracy" in p.stdout or "test accuracy" in p.stdout
