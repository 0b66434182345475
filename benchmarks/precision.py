"""bf16 autocast and channels_last against fp32, measured in one run: epoch time ratio and test
accuracy (paired over seeds, 95 % interval).

    python benchmarks/precision.py [--seeds 3] [--epochs 8] [--subset 20000]

(a) the Hinton student, MLP 2x800, plain cross-entropy; (b) a CNN (cnn:32-64-128, BatchNorm) in
fp32, bf16, and bf16 + channels_last. Seconds per epoch are medians over epochs 2..E (epoch 1
warms up kernels), same machine and threads for every variant, variants interleaved per seed so
machine noise hits them alike. Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from distillab.config import DataConfig, OptimConfig, TrainConfig
from distillab.data import prepare_data
from distillab.engine.trainer import Trainer, evaluate
from distillab.methods.supervised import Supervised, SupervisedConfig
from distillab.models import create_model
from distillab.results.stats import fmt_interval


def train(model_name: str, data, seed: int, epochs: int, precision: str, channels_last: bool) -> tuple[float, float]:
    torch.manual_seed(seed)
    obj = Supervised(create_model(model_name, 10, 1, 28), SupervisedConfig())
    cfg = TrainConfig(epochs=epochs, precision=precision, channels_last=channels_last,
                      optim=OptimConfig(lr=0.05, schedule="cosine"))
    with tempfile.TemporaryDirectory() as d:
        hist = Trainer(obj, data.train, cfg, Path(d), seed=seed, tensorboard=False).fit()
    per_epoch = statistics.median(h["seconds"] for h in hist[1:]) if len(hist) > 1 else hist[0]["seconds"]
    return per_epoch, evaluate(obj.student, data.test)["acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--subset", type=int, default=20000)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    jobs = {"mlp:800-800": [("fp32", False), ("bf16", False)],
            "cnn:32-64-128": [("fp32", False), ("bf16", False), ("bf16", True)]}
    for model, variants in jobs.items():
        res: dict[tuple[str, bool], list[tuple[float, float]]] = {v: [] for v in variants}
        for seed in range(args.seeds):
            data = prepare_data(DataConfig(source="fashion-mnist", val_size=0, train_subset=args.subset,
                                           batch_size=128), seed)
            for v in variants:
                res[v].append(train(model, data, seed, args.epochs, *v))
        base = res[variants[0]]
        print(f"\n{model}, {args.subset} images, {args.epochs} epochs, {args.seeds} seeds")
        print(
            "| variant | s/epoch (median over seeds) | speed-up vs fp32 | test acc (%) | Δ acc vs fp32 (pts, 95% CI) |"
        )
        print("|---|---|---|---|---|")
        for v in variants:
            t = statistics.median(s for s, _ in res[v])
            t0 = statistics.median(s for s, _ in base)
            accs = [a for _, a in res[v]]
            diff = [a - b for (_, a), (_, b) in zip(res[v], base, strict=True)]
            name = v[0] + (" + channels_last" if v[1] else "")
            print(f"| {name} | {t:.2f} | {t0 / t:.2f}x | {100 * statistics.fmean(accs):.2f} | "
                  f"{fmt_interval(diff) if v != variants[0] else '—'} |")


if __name__ == "__main__":
    main()
