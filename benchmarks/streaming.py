"""Streaming from WebDataset shards vs the in-memory loader: peak memory as the data grows, and
accuracy on the same data.

    python benchmarks/streaming.py [--seeds 0 1 2] [--epochs 3]

Packs Fashion-MNIST twice (`distillab data pack`): the first 10,000 and all 55,000 training
examples (5,000 held out for validation, seed 0, as the in-memory loader's val_size 5000). Then
trains `cnn:8-16-32` with `distillab run` in a fresh process per run and reports each process's
peak RSS: streaming from 10k vs 55k shards should stay flat (a shuffle buffer per worker, never
the dataset), while the in-memory loader grows with the data. Accuracy: the same 55k examples,
streamed vs in memory, several seeds, paired difference with a 95 % interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from distillab.results.stats import fmt_interval, fmt_pm


def run(cfg: dict, out: Path) -> tuple[dict, float, float, float]:
    """Train in a fresh process; (summary, peak RSS of the training process and of its largest
    DataLoader worker in GB, wall seconds)."""
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", (
        "import resource, sys; from distillab.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"),
        "run", str(path), "--out", str(out), "--quiet"], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK"))
    main_kb, worker_kb = (int(v) for v in line.split()[1:3])
    summary = json.loads(next(out.rglob("summary.json")).read_text())
    return summary, main_kb / 1024**2, worker_kb / 1024**2, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name, limit in (("10k", 10_000), ("55k", None)):
            cmd = [sys.executable, "-m", "distillab", "data", "pack", "fashion-mnist", str(tmp / name), "--val", "5000"]
            t0 = time.perf_counter()
            subprocess.run(cmd + (["--limit", str(limit)] if limit else []), check=True, stdout=subprocess.DEVNULL)
            size = sum(p.stat().st_size for p in (tmp / name).glob("*.tar")) / 1e6
            print(f"pack {name}: {time.perf_counter() - t0:.1f} s, {size:.0f} MB of shards")
        model = {"name": "cnn:8-16-32"}
        train = {"epochs": args.epochs, "optim": {"lr": 0.05, "schedule": "cosine"}}

        def cfg(source: str, seed: int, **data: object) -> dict:
            return {"recipe": "train", "name": "r", "seeds": [seed], "model": model, "train": train,
                    "data": {"source": source, "val_size": 5000, "batch_size": 128, **data}}

        print("\n| loader | training examples | peak RSS (GB) | largest worker (GB) | wall s | test acc (%) |")
        print("|---|---|---|---|---|---|")
        rows = [("stream", "10k", cfg(f"webdataset:{tmp / '10k'}", args.seeds[0], num_workers=2)),
                ("stream", "55k", cfg(f"webdataset:{tmp / '55k'}", args.seeds[0], num_workers=2)),
                ("memory", "10k", cfg("fashion-mnist", args.seeds[0], train_subset=10_000)),
                ("memory", "55k", cfg("fashion-mnist", args.seeds[0]))]
        for kind, n, c in rows:
            s, rss, worker, wall = run(c, tmp / f"rss-{kind}-{n}")
            print(f"| {kind} | {n} | {rss:.2f} | {worker:.2f} | {wall:.0f} | {100 * s['test_acc']:.2f} |")

        acc: dict[str, list[float]] = {"stream": [], "memory": []}
        for seed in args.seeds:
            for kind, src, extra in (("stream", f"webdataset:{tmp / '55k'}", {"num_workers": 2}),
                                     ("memory", "fashion-mnist", {})):
                s, _, _, _ = run(cfg(src, seed, **extra), tmp / f"acc-{kind}-{seed}")
                acc[kind].append(s["test_acc"])
        diff = [a - b for a, b in zip(acc["stream"], acc["memory"], strict=True)]
        print(f"\n55k examples, {len(args.seeds)} seeds: stream {fmt_pm(acc['stream'], 2, 100)}, memory "
              f"{fmt_pm(acc['memory'], 2, 100)}; stream − memory {fmt_interval(diff)} points (95% CI)")


if __name__ == "__main__":
    main()
