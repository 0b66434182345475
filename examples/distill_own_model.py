"""Distil your own teacher into your own student, from your own Dataset, in a few lines.

    python examples/distill_own_model.py

Data: scikit-learn's bundled 8x8 digits as a plain TensorDataset (no download).
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset, random_split

import distillab

torch.manual_seed(0)  # your models are initialised by you: seed them for a repeatable run

digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
y = torch.tensor(digits.target)
train_set, test_set = random_split(TensorDataset(x, y), [1500, len(y) - 1500], torch.Generator().manual_seed(0))


def mlp(hidden: int) -> nn.Module:  # any nn.Module mapping images to logits will do
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


teacher = distillab.train(mlp(256), train_set, epochs=15, lr=0.05, batch_size=64).model
student = distillab.distill(mlp(16), teacher, train_set, method="kd", temperature=4.0, alpha=0.9,
                            epochs=15, lr=0.05, batch_size=64).model
alone = distillab.train(mlp(16), train_set, epochs=15, lr=0.05, batch_size=64).model

for name, model in (("teacher", teacher), ("student, distilled", student), ("student, alone", alone)):
    print(f"{name:20s} test accuracy {100 * distillab.evaluate(model, test_set)['acc']:.1f}%")
