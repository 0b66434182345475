"""Issue #25: feature methods on any nn.Module — taps by module path or found automatically."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import distillab
from distillab.errors import UserError


def _digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return TensorDataset(x[:1400], torch.tensor(d.target[:1400])), TensorDataset(
        x[1400:], torch.tensor(d.target[1400:])
    )


class Net(nn.Module):
    """A plain module (no BlockNet, no tap_modules), torchvision-style ``features`` / ``classifier``."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 4, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return distillab.train(Net(16), _digits()[0], epochs=2, batch_size=64).model


def test_at_on_a_plain_module_by_layer_names(teacher):
    train, test = _digits()
    torch.manual_seed(1)
    r = distillab.distill(Net(8), teacher, train, method="at", epochs=1, batch_size=64, val_data=test,
                          student_layers=["features.3", "features.6"], teacher_layers=["features.3", "features.6"])
    assert r.objective.pairs == [(0, 0), (1, 1)] and r.history[0]["train_at"] > 0
    # The i-th named layer's output is what AT matches: 8x8 maps, then 4x4.
    from distillab.methods.features import block_shapes

    assert [s[1:] for s in block_shapes(r.model, (1, 8, 8))] == [(8, 8), (4, 4)]


def test_at_on_a_plain_module_pairs_automatically(teacher):
    train, _ = _digits()
    torch.manual_seed(1)
    r = distillab.distill(Net(8), teacher, train, method="at", epochs=1, batch_size=64)
    # Leaf layers in call order, the last of each spatial size paired: features.3 (8x8), .6 (4x4), .7 (2x2).
    assert r.objective.pairs == [(3, 3), (6, 6), (7, 7)]
    # One side named: the other is paired by feature size.
    r = distillab.distill(Net(8), teacher, train, method="at", epochs=1, batch_size=64, student_layers=["features.1"])
    assert r.objective.pairs == [(0, 3)]


def test_layer_name_typos_and_mismatches_are_one_line(teacher):
    train, _ = _digits()
    with pytest.raises(UserError, match="student layer 'feature.3' not found in Net; did you mean features.3"):
        distillab.distill(Net(8), teacher, train, method="sp", epochs=1, student_layers=["feature.3"])
    with pytest.raises(UserError, match="student_layers names 1 layers, teacher_layers 2"):
        distillab.distill(Net(8), teacher, train, method="at", epochs=1, student_layers=["features.3"],
                          teacher_layers=["features.3", "features.6"])


def test_penultimate_methods_and_blocknet_export(teacher):
    train, _ = _digits()
    torch.manual_seed(1)
    r = distillab.distill(Net(8), teacher, train, method="pkt", epochs=1, batch_size=64)  # tap: the flattened features
    assert r.history[0]["train_pkt"] >= 0
    net = distillab.BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())], nn.Linear(32, 10))
    r = distillab.distill(net, teacher, train, method="rkd", epochs=1, batch_size=64)
    assert r.history[0]["train_distance"] >= 0
