"""Transfer the first blocks of a network trained on one task to another, frozen (Yosinski's AnB).

    python examples/transfer_with_freezing.py

Task A: digits 0-4; task B: digits 5-9 with only 20 examples per class.
"""

import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

import distillab
from distillab.transfer import transfer

digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
y = torch.tensor(digits.target)
a, b = y < 5, y >= 5
task_a = TensorDataset(x[a], y[a])
few_b = torch.cat([torch.nonzero(y == c).flatten()[:20] for c in range(5, 10)])
rest_b = torch.tensor([i for i in torch.nonzero(b).flatten().tolist() if i not in set(few_b.tolist())])
task_b_train = TensorDataset(x[few_b], y[few_b] - 5)
task_b_test = TensorDataset(x[rest_b], y[rest_b] - 5)

torch.manual_seed(0)
base_a = distillab.train(distillab.create_model("cnn:16-32", 5, 1, 8), task_a, epochs=10, batch_size=64).model

for n_blocks, freeze in ((0, False), (2, True), (2, False)):
    torch.manual_seed(1)
    target = distillab.create_model("cnn:16-32", 5, 1, 8)
    if n_blocks:
        transfer(target, base_a, n_blocks, freeze=freeze)  # copy blocks 0..n-1 (frozen: BatchNorm stats too)
    distillab.train(target, task_b_train, epochs=30, batch_size=25, lr=0.02)
    label = "from scratch" if not n_blocks else f"{n_blocks} blocks from A, {'frozen' if freeze else 'fine-tuned'}"
    print(f"{label:32s} task-B test accuracy {100 * distillab.evaluate(target, task_b_test)['acc']:.1f}%")
