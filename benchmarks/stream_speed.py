"""Seconds per epoch streamed from WebDataset shards vs in memory, on the same tiny images.

    OMP_NUM_THREADS=1 python benchmarks/stream_speed.py [--epochs 8] [--fashion 10000]

scikit-learn's 8x8 digits are written as an image folder of greyscale PNGs (the train/test split of
the built-in ``digits`` source), packed with ``distillab data pack imagefolder:…`` and trained twice
with ``distillab run`` in a fresh process each: ``source: imagefolder:…`` (in memory) and
``source: webdataset:…`` (streamed, ``data.num_workers`` decoding workers). Both read the same
folder, hold out the same 200 validation examples and train the same model, so the ratio of their
epoch times (median over epochs 2..N, each epoch's training plus its validation pass) is the cost of
streaming, measured in one run. ``--fashion N`` adds the same comparison on N Fashion-MNIST training
examples (``data pack fashion-mnist --limit N`` vs ``train_subset: N``: same size, other subsets).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def write_digits_folder(root: Path) -> None:
    """The built-in digits source's train/test split as ``root/{train,test}/<class>/NNNN.png`` (8x8, L)."""
    from PIL import Image

    from distillab.data.sources import load_source

    ds = load_source("digits")
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            d = root / split / str(int(label))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0].numpy().astype(np.uint8), mode="L").save(d / f"{i:05d}.png")


def train(tmp: Path, name: str, data: dict, args: argparse.Namespace) -> tuple[list[float], float, dict]:
    """Epoch seconds from metrics.jsonl, the process's wall seconds and the summary of one fresh run."""
    cfg = {"recipe": "train", "name": "r", "seeds": [0], "model": {"name": args.model},
           "train": {"epochs": args.epochs, "optim": {"lr": args.lr, "schedule": "cosine"}},
           "data": {"batch_size": args.batch, **data}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distillab", "run", str(path), "--out", str(tmp / name), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    metrics = next((tmp / name).rglob("metrics.jsonl"))
    secs = [json.loads(ln)["seconds"] for ln in metrics.read_text().splitlines() if ln.strip()]
    return secs, wall, json.loads(next((tmp / name).rglob("summary.json")).read_text())


def compare(tmp: Path, label: str, memory: dict, stream: dict, args: argparse.Namespace) -> None:
    rows = {}
    for kind, data in (("memory", memory), ("stream", stream)):
        secs, wall, summary = train(tmp, f"{label}-{kind}", data, args)
        rows[kind] = (statistics.median(secs[1:]), wall, summary)
    for kind, (s, wall, summary) in rows.items():
        print(f"| {label} | {kind} | {s:.3f} | {wall:.1f} | {summary.get('params', '?')} | "
              f"{100 * summary['test_acc']:.2f} |")
    print(f"| {label} | **stream / memory** | **{rows['stream'][0] / rows['memory'][0]:.2f}x** | "
          f"{rows['stream'][1] / rows['memory'][1]:.2f}x | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers of the streamed runs")
    ap.add_argument("--model", default="cnn:8-16")
    ap.add_argument("--fashion", type=int, default=0, help="also N Fashion-MNIST training examples (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        write_digits_folder(tmp / "digits")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "distillab", "data", "pack", f"imagefolder:{tmp / 'digits'}",
                        str(tmp / "digits-wds"), "--val", "200"], check=True, stdout=subprocess.DEVNULL)
        meta = json.loads((tmp / "digits-wds" / "meta.json").read_text())
        print(f"digits packed in {time.perf_counter() - t0:.1f} s as {meta['shape']}")
        print(f"\n{args.model}, {args.epochs} epochs, batch {args.batch}, lr {args.lr}, stream with {args.workers} "
              f"workers\n")
        print("| data | loader | s/epoch (median of epochs 2..N) | wall s (process) | params | test acc (%) |")
        print("|---|---|---|---|---|---|")
        compare(tmp, "digits 8x8", {"source": f"imagefolder:{tmp / 'digits'}", "val_size": 200},
                {"source": f"webdataset:{tmp / 'digits-wds'}", "val_size": 200, "num_workers": args.workers},
                args)
        if args.fashion:
            subprocess.run([sys.executable, "-m", "distillab", "data", "pack", "fashion-mnist", str(tmp / "fm-wds"),
                            "--val", "5000", "--limit", str(args.fashion)], check=True, stdout=subprocess.DEVNULL)
            compare(tmp, f"fashion-mnist {args.fashion // 1000}k",
                    {"source": "fashion-mnist", "val_size": 5000, "train_subset": args.fashion},
                    {"source": f"webdataset:{tmp / 'fm-wds'}", "val_size": 5000, "num_workers": args.workers},
                    args)


if __name__ == "__main__":
    main()
