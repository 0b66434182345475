"""What a claim needs before its test means anything, measured on validation from the runs
themselves: a teacher ahead of its student, runs that have converged, a student that over-fits
its training crops. Each returns a :class:`~distillab.results.stats.Precondition` (in points) that
a :class:`~distillab.results.stats.Comparison` carries; a failed one makes the claim "not testable
here" with the measured value beside it."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from distillab.results.stats import Precondition

CONVERGED_WITHIN = 0.3  # points: validation accuracy over the last quarter of epochs vs its best


def val_lead(ahead: Sequence[dict], behind: Sequence[dict], need: float, label: str) -> Precondition:
    """Mean validation accuracy of the ``ahead`` runs minus that of the ``behind`` runs (points),
    which must be at least ``need`` — e.g. a teacher clearly better than the student trained alone,
    or there is nothing to distil. Runs without a validation split give nan (fails)."""
    a = [r.get("val_acc") for r in ahead]
    b = [r.get("val_acc") for r in behind]
    if not a or not b or any(v is None for v in (*a, *b)):
        return Precondition(f"{label} (val, no validation split)", float("nan"), need)
    return Precondition(f"{label} (val)", 100 * (statistics.fmean(a) - statistics.fmean(b)), need)


def convergence_gap(run_dir: Path) -> float:
    """Best validation accuracy minus the mean over the last quarter of the run's epochs (points);
    nan without validation records."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return float("nan")
    curve = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("val_acc"), (int, float)):
            curve.append(float(rec["val_acc"]))
    if not curve:
        return float("nan")
    tail = curve[-max(1, len(curve) // 4):]
    return 100 * (max(curve) - statistics.fmean(tail))


def converged(run_dirs: Sequence[Path], label: str, within: float = CONVERGED_WITHIN) -> Precondition:
    """Every run's validation accuracy over its last quarter of epochs lies, on average, within
    ``within`` points of its best: the largest such gap over the runs. A run still climbing or
    already falling apart fails it."""
    gaps = [convergence_gap(d) for d in run_dirs]
    worst = max(gaps) if gaps and all(g == g for g in gaps) else float("nan")
    return Precondition(f"{label} converged: best − last-quarter val", worst, within, at_most=True)


def overfit_gap(runs: Sequence[dict], need: float, label: str) -> Precondition:
    """Training accuracy on the (augmented) crops of the last epoch minus validation accuracy
    (points), mean over runs: Label Refinery's premise is a model that fits its crops' labels far
    better than it generalises."""
    gaps = [r.get("train_acc") - r.get("val_acc") for r in runs
            if r.get("train_acc") is not None and r.get("val_acc") is not None]
    value = 100 * statistics.fmean(gaps) if gaps and len(gaps) == len(runs) else float("nan")
    return Precondition(f"{label} train-crop − val accuracy", value, need)
