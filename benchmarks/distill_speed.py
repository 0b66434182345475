"""What distillation costs next to plain training, measured in one run on this machine.

    python benchmarks/distill_speed.py [--epochs 3] [--quick]

Prints, for the MLP pair of Hinton's job (Fashion-MNIST 60k, student 2x800, teacher 2x1200,
batch 128, SGD 0.1 momentum 0.9, T = 4, α = 0.9) and for a CNN pair (cnn:32-64-128 → cnn:8-16-32,
BatchNorm, ±2 px jitter, 20k images) at 28x28 and 32x32:
  * seconds per epoch of plain training, online KD (teacher forward every step) and KD from the
    soft-label cache (engine/soft_labels.py; 1 view without augmentation, 4 views with it), in
    fp32 and bf16, and each one's ratio to plain fp32 training of the same student;
  * the cache's build time and bytes per example-view;
  * the achieved FLOP/s of plain MLP training ÷ this machine's measured GEMM rate (fp32, bf16);
  * epoch time as the training set grows 10k → 60k and as the student widens;
  * the peak RSS of the CLI running the Hinton job (1 epoch per role).
Times are the median over epochs 2..E (the first warms up). Ratios, not absolute times, are what
to compare between machines.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from distillab.config import AugmentConfig, DataConfig, OptimConfig, TrainConfig
from distillab.data import prepare_data
from distillab.engine.soft_labels import SoftLabelCacheConfig, open_cache
from distillab.engine.trainer import Trainer
from distillab.methods import KD, KDConfig, Supervised, SupervisedConfig, Teacher
from distillab.models import create_model
from distillab.profile import count_macs


def gemm_rate(dtype: torch.dtype, n: int = 1024, reps: int = 30) -> float:
    """FLOP/s of an n x n x n matmul (what the MLP's Linear layers reduce to)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def epoch_seconds(objective, loader, epochs: int, precision: str = "fp32", lr: float = 0.1) -> float:
    cfg = TrainConfig(epochs=epochs, precision=precision, checkpoint_every=epochs,
                      optim=OptimConfig(lr=lr, momentum=0.9, schedule="constant"))
    with tempfile.TemporaryDirectory() as d:
        hist = Trainer(objective, loader, cfg, Path(d), seed=0, tensorboard=False).fit()
    return statistics.median(h["seconds"] for h in hist[1:]) if len(hist) > 1 else hist[0]["seconds"]


def compare(label: str, data_cfg: DataConfig, student: str, teacher: str, views: int, epochs: int,
            img: int) -> dict:
    """Plain, online-KD and cached-KD epoch times (fp32 and bf16) for one student/teacher pair."""
    data = prepare_data(data_cfg, 0)
    kw = {"in_chans": 1, "img_size": img}
    torch.manual_seed(0)
    teacher_net = Teacher(create_model(teacher, 10, **kw))
    kd_cfg = KDConfig(temperature=4, alpha=0.9, teacher=["-"])
    out = {"pair": label, "examples": len(data.train.y)}
    with tempfile.TemporaryDirectory() as d:
        cache_cfg = SoftLabelCacheConfig(views=views, dir=d)
        cached, rec = open_cache(cache_cfg, [d], [f"benchmark-{teacher}"], data.train, lambda _: teacher_net,
                                 torch.device("cpu"))
        out["cache build s"] = rec["build_seconds"]
        out["cache bytes / example-view"] = rec["bytes"] / (views * len(data.train.y))
        # plain, online and cached back to back per precision: a ratio compares neighbours in time
        views_on = data.train.views
        for prec in ("fp32", "bf16"):
            data.train.views = None  # plain and online KD: fresh augmentation every epoch
            out[f"plain {prec}"] = epoch_seconds(Supervised(create_model(student, 10, **kw), SupervisedConfig()),
                                                 data.train, epochs, prec)
            data.train.views = views_on
            out[f"cached KD {prec}"] = epoch_seconds(KD(create_model(student, 10, **kw), cached, kd_cfg),
                                                     data.train, epochs, prec)
            data.train.views = None
            out[f"online KD {prec}"] = epoch_seconds(KD(create_model(student, 10, **kw), teacher_net, kd_cfg),
                                                     data.train, epochs, prec)
    out["views"] = views
    return out


def peak_rss_of_cli(tmp: Path) -> float:
    """Peak RSS (GiB) of `distillab run` on the Hinton job, 1 epoch per role, in a fresh process."""
    cfg = {
        "recipe": "hinton",
        "data": {"source": "fashion-mnist", "val_size": 0, "batch_size": 128},
        "seeds": [0],
        "teacher": {
            "model": {"name": "mlp:1200-1200", "kwargs": {"dropout": 0.2}},
            "train": {"epochs": 1, "optim": {"lr": 0.05, "grad_clip": 5.0}},
        },
        "student": {"model": {"name": "mlp:800-800"}, "train": {"epochs": 1, "optim": {"lr": 0.05, "grad_clip": 5.0}}},
        "distill": {"temperature": 4, "alpha": 0.9},
    }
    (tmp / "h.yaml").write_text(json.dumps(cfg))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "distillab", "run", str(tmp / "h.yaml"), "--out", str(tmp / "h"),
                    "--quiet"], check=True, stdout=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak, before) / 1024**2  # KiB → GiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10k images instead of 60k / 20k (a smoke test)")
    args = ap.parse_args()
    full, cnn_n = (10_000, 10_000) if args.quick else (None, 20_000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rates = {dt: gemm_rate(dt) for dt in (torch.float32, torch.bfloat16)}
    print(f"GEMM 1024^3: fp32 {rates[torch.float32] / 1e9:.0f} GFLOP/s, bf16 {rates[torch.bfloat16] / 1e9:.0f} GFLOP/s")

    mlp_data = DataConfig(source="fashion-mnist", val_size=0, train_subset=full, batch_size=128)
    cnn_aug = AugmentConfig(jitter=2)
    jobs = [compare("MLP 2x1200 → 2x800, 28x28", mlp_data, "mlp:800-800", "mlp:1200-1200", 1, args.epochs, 28),
            compare("CNN 32-64-128 → 8-16-32, 28x28, ±2 px", DataConfig(source="fashion-mnist", val_size=0,
                    train_subset=cnn_n, batch_size=128, augment=cnn_aug), "cnn:8-16-32", "cnn:32-64-128", 4,
                    args.epochs, 28),
            compare("CNN 32-64-128 → 8-16-32, 32x32, ±2 px", DataConfig(source="fashion-mnist", val_size=0,
                    train_subset=cnn_n, batch_size=128, resize=32, augment=cnn_aug), "cnn:8-16-32",
                    "cnn:32-64-128", 4, args.epochs, 32)]
    print("\n| pair | examples | plain fp32 s/epoch | online KD / plain | cached KD / plain | plain bf16 / plain fp32 "
          "| cached KD bf16 / plain fp32 | cache build s | bytes / example-view |")
    print("|---|---|---|---|---|---|---|---|---|")
    for j in jobs:
        p = j["plain fp32"]
        print(
            f"| {j['pair']} | {j['examples']} | {p:.2f} | {j['online KD fp32'] / p:.2f} "
            f"| {j['cached KD fp32'] / p:.2f} "
            f"| {j['plain bf16'] / p:.2f} | {j['cached KD bf16'] / p:.2f} | {j['cache build s']:.1f} "
            f"| {j['cache bytes / example-view']:.0f} ({j['views']} views) |"
        )

    mlp = jobs[0]
    macs = count_macs(create_model("mlp:800-800", 10), (1, 28, 28))
    achieved = 6 * macs * mlp["examples"] / mlp["plain fp32"]  # forward + backward ≈ 3 x forward, 2 FLOP/MAC
    achieved_bf16 = 6 * macs * mlp["examples"] / mlp["plain bf16"]
    print(f"\nMLP student plain training: {achieved / 1e9:.0f} GFLOP/s fp32 = "
          f"{100 * achieved / rates[torch.float32]:.0f}% of the fp32 GEMM rate; bf16 {achieved_bf16 / 1e9:.0f} GFLOP/s "
          f"= {100 * achieved_bf16 / rates[torch.bfloat16]:.0f}% of the bf16 GEMM rate")

    print("\n| training set | plain MLP s/epoch | µs per example |")
    print("|---|---|---|")
    sizes = [10_000, 20_000] if args.quick else [10_000, 20_000, 40_000, 60_000]
    for n in sizes:
        d = prepare_data(DataConfig(source="fashion-mnist", val_size=0, train_subset=n if n < 60_000 else None,
                                    batch_size=128), 0)
        s = epoch_seconds(Supervised(create_model("mlp:800-800", 10), SupervisedConfig()), d.train, args.epochs)
        print(f"| {len(d.train.y)} | {s:.2f} | {1e6 * s / len(d.train.y):.1f} |")

    print("\n| student | mult-adds | plain s/epoch (20k) |")
    print("|---|---|---|")
    d = prepare_data(DataConfig(source="fashion-mnist", val_size=0, train_subset=20_000, batch_size=128), 0)
    for w in (400, 800, 1600):
        name = f"mlp:{w}-{w}"
        s = epoch_seconds(Supervised(create_model(name, 10), SupervisedConfig()), d.train, args.epochs)
        print(f"| {name} | {count_macs(create_model(name, 10), (1, 28, 28)) / 1e6:.2f}M | {s:.2f} |")

    with tempfile.TemporaryDirectory() as t:
        print(
            "\npeak RSS of `distillab run` on the Hinton job (60k, 1 epoch per role): "
            f"{peak_rss_of_cli(Path(t)):.2f} GiB"
        )


if __name__ == "__main__":
    main()
