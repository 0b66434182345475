"""KD cost relative to plain training, and the loader's augmentation cost, measured in one run.

    python benchmarks/kd_overhead.py [--epochs 2] [--subset 20000]

Prints epoch times for the 2x800 student trained alone and distilled from a 2x1200 teacher
(teacher forward on every batch), their ratio, and the share of an epoch spent in the loader
with ±2 px jitter. Ratios, not absolute times, are what to compare: mult-adds predict KD / plain
≈ 1 + (teacher forward) / (student forward + backward) ≈ 1.6 for these MLPs (1.76 measured on 2
CPU threads, docs/results.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from distillab.config import AugmentConfig, DataConfig, OptimConfig, TrainConfig
from distillab.data import prepare_data
from distillab.engine.trainer import Trainer
from distillab.methods import KD, KDConfig, Supervised, SupervisedConfig, Teacher
from distillab.models import create_model


def epoch_seconds(objective, data, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        hist = Trainer(objective, data.train, TrainConfig(epochs=epochs, optim=OptimConfig(lr=0.05)), Path(d),
                       seed=0).fit()
    return min(h["seconds"] for h in hist)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=20000)
    args = ap.parse_args()
    cfg = DataConfig(source="fashion-mnist", val_size=0, train_subset=args.subset, batch_size=128)
    data = prepare_data(cfg, 0)
    torch.manual_seed(0)
    plain = epoch_seconds(Supervised(create_model("mlp:800-800", 10), SupervisedConfig()), data, args.epochs)
    teacher = Teacher(create_model("mlp:1200-1200", 10))
    kd = epoch_seconds(KD(create_model("mlp:800-800", 10), teacher, KDConfig(teacher=["-"])), data, args.epochs)

    jittered = prepare_data(cfg.model_copy(update={"augment": AugmentConfig(jitter=2)}), 0)
    t0 = time.perf_counter()
    for _ in jittered.train:
        pass
    loader_aug = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in data.train:
        pass
    loader_plain = time.perf_counter() - t0

    print(f"threads {torch.get_num_threads()}, {args.subset} images, batch 128")
    print(f"student alone  : {plain:.2f} s/epoch")
    print(f"student + KD   : {kd:.2f} s/epoch")
    print(f"KD / plain     : {kd / plain:.2f}")
    print(f"loader, ±2 px jitter: {loader_aug:.3f} s/epoch ({100 * loader_aug / plain:.1f}% of a plain epoch); "
          f"without augmentation {loader_plain:.3f} s")


if __name__ == "__main__":
    main()
