"""What a claim needs before its test means anything, measured on validation from the runs
themselves: a teacher ahead of its student, runs that have converged, a student that over-fits
its training crops. Each returns a :class:`~distillab.results.stats.Precondition` (in points) that
a :class:`~distillab.results.stats.Comparison` carries; a failed one makes the claim "not testable
here" with the measured value beside it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from distillab.engine.run import read_metrics, read_summary
from distillab.errors import UserError
from distillab.results.stats import Precondition

CONVERGED_WITHIN = 0.3  # points: the last quarter of validation accuracy vs its best and the one before


def val_lead(ahead: Sequence[dict], behind: Sequence[dict], need: float, label: str) -> Precondition:
    """Mean validation accuracy of the ``ahead`` runs minus that of the ``behind`` runs (points),
    which must be at least ``need`` — e.g. a teacher clearly better than the student trained alone,
    or there is nothing to distil. Runs without a validation split give nan (fails)."""
    a = [r.get("val_acc") for r in ahead]
    b = [r.get("val_acc") for r in behind]
    if not a or not b or any(v is None for v in (*a, *b)):
        return Precondition(f"{label} (val, no validation split)", float("nan"), need)
    return Precondition(f"{label} (val)", 100 * (statistics.fmean(a) - statistics.fmean(b)), need)


def _val_curve(run_dir: Path) -> list[float]:
    return [float(r["val_acc"]) for r in read_metrics(run_dir) if isinstance(r.get("val_acc"), (int, float))]


def convergence_gap(run_dir: Path) -> tuple[float, float]:
    """(gap, noise) in points for one run, from its validation curve. With k = a quarter of its
    evaluations, the gap is the larger of (best mean over k consecutive evaluations − mean of the
    last k), a run past its best, and (mean of the last k/2 − mean of the k/2 before), a run still
    climbing at its end. Window means rather than single evaluations, so one lucky epoch does not
    count. ``noise``: two standard errors of a difference of two half-window means, from the
    validation size in the run's summary (0 when unknown). nan without validation records."""
    curve = _val_curve(run_dir)
    if not curve:
        return float("nan"), 0.0
    k = max(1, len(curve) // 4)
    windows = [statistics.fmean(curve[j:j + k]) for j in range(len(curve) - k + 1)]
    last = windows[-1]
    gap = max(windows) - last
    # Still climbing *within* the last quarter: its second half above its first. (Not the last
    # quarter against the one before: an annealed lr rightly lifts the last quarter above it.)
    h = max(1, k // 2)
    if len(curve) >= 2 * h:
        gap = max(gap, statistics.fmean(curve[-h:]) - statistics.fmean(curve[-2 * h:-h]))
    noise = 0.0
    try:
        val_n = read_summary(Path(run_dir)).get("val_n")
    except (OSError, UserError):
        val_n = None
    if isinstance(val_n, int) and val_n > 0:
        p = min(max(last, 1e-3), 1 - 1e-3)
        noise = 2 * math.sqrt(p * (1 - p) / val_n) * math.sqrt(2 / h)
    return 100 * gap, 100 * noise


def converged(run_dirs: Sequence[Path], label: str, within: float = CONVERGED_WITHIN) -> Precondition:
    """Every run has converged: its last quarter of validation evaluations is, on average, within
    ``within`` points of its best quarter, and does not rise within itself (or within the validation
    noise, when that is larger — 0.3 point cannot be resolved with a few thousand images). The
    worst run's gap is the measured value."""
    measured = [convergence_gap(d) for d in run_dirs]
    if not measured or any(g != g for g, _ in measured):
        return Precondition(f"{label} converged (no validation curve)", float("nan"), within, at_most=True)
    worst = max(g for g, _ in measured)
    need = max(within, max(n for _, n in measured))
    return Precondition(f"{label} converged: val gap", worst, round(need, 2), at_most=True)


def overfit_gap(runs: Sequence[dict], need: float, label: str) -> Precondition:
    """Training accuracy on the (augmented) crops of the last epoch minus validation accuracy
    (points), mean over runs: Label Refinery's premise is a model that fits its crops' labels far
    better than it generalises."""
    gaps = [r.get("train_acc") - r.get("val_acc") for r in runs
            if r.get("train_acc") is not None and r.get("val_acc") is not None]
    value = 100 * statistics.fmean(gaps) if gaps and len(gaps) == len(runs) else float("nan")
    return Precondition(f"{label} train-crop − val accuracy", value, need)
