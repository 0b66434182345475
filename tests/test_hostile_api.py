"""Hostile data through the Python API (issue #24, class 4): labels that are floats, text, negative
or beyond the student's classes, items that are not (image, label), a teacher of fewer classes than
the student, an empty evaluation set. Each is a UserError naming the problem before any training
step — never a truncated label or an error deep inside torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import distillab
from distillab.errors import UserError

X = torch.randn(40, 1, 4, 4)
Y = torch.arange(40) % 3


def _net(classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes))


class Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _pairs(label_of):
    return Items([(X[i], label_of(i)) for i in range(len(X))])


CASES = {
    "float_labels_tensor_dataset": (lambda: distillab.train(_net(), TensorDataset(X, Y.float() + 0.5), epochs=1),
                                    "not a whole number"),
    "float_labels_items": (lambda: distillab.train(_net(), _pairs(lambda i: 1.7), epochs=1), "not a whole number"),
    "nan_label": (lambda: distillab.train(_net(), _pairs(lambda i: float("nan")), epochs=1), "not a whole number"),
    "string_labels": (lambda: distillab.train(_net(), _pairs(lambda i: "cat"), epochs=1), "'cat'"),
    "none_label": (lambda: distillab.train(_net(), _pairs(lambda i: None), epochs=1), "None"),
    "negative_label": (lambda: distillab.train(_net(), TensorDataset(X, Y - 1), epochs=1), "label -1"),
    "label_beyond_classes_first_batch": (lambda: distillab.train(_net(), TensorDataset(X, Y + 5), epochs=1),
                                         "outside the student's 3 classes"),
    "string_items": (lambda: distillab.train(_net(), Items(["img"] * 8), epochs=1), "dataset item"),
    "string_image": (lambda: distillab.train(_net(), Items([("pixels", 0)] * 8), epochs=1), "image is a str"),
    "teacher_fewer_classes": (lambda: distillab.distill(_net(3), _net(2), TensorDataset(X, Y), epochs=1),
                              "teacher 0 predicts 2 classes"),
    "empty_train_set": (lambda: distillab.train(_net(), TensorDataset(X[:0], Y[:0]), epochs=1), "empty"),
    "empty_evaluation_loader": (lambda: distillab.evaluate(_net(), []), "empty"),
    "evaluation_label_beyond_classes": (lambda: distillab.evaluate(_net(), TensorDataset(X, Y + 3)),
                                        "outside the model's 3 classes"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_data_in_the_api_is_a_user_error(name):
    call, needle = CASES[name]
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")) as e:
        call()
    assert "\n" not in str(e.value)


def test_a_label_beyond_the_classes_in_a_later_batch_is_caught():
    from distillab.data.dataset_loader import DatasetLoader

    loader = DatasetLoader(_pairs(lambda i: 7 if i == 39 else int(Y[i])), 8, seed=0)
    loader.check_labels_below(3)
    with pytest.raises(UserError, match="label 7 is outside the classes 0..2"):
        for _ in loader:
            pass


def test_whole_number_float_labels_train_as_their_integers():
    """Labels stored as floats of whole numbers (numpy arrays often are) are read as those integers."""
    torch.manual_seed(0)
    a = distillab.train(_net(), TensorDataset(X, Y.float()), epochs=1, seed=0)
    torch.manual_seed(0)
    b = distillab.train(_net(), TensorDataset(X, Y), epochs=1, seed=0)
    assert a.history[0]["train_ce"] == b.history[0]["train_ce"]
