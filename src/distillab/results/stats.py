"""Mean ± std over seeds, and tables rendered as Markdown or CSV."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = list(values)
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_pm(values: Sequence[float], digits: int = 2, scale: float = 1.0) -> str:
    """'90.12 ± 0.31' (values multiplied by ``scale``)."""
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def csv_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences over seeds and its two-sided Student-t interval (lo, hi).

    With one seed the interval is (nan, nan): a single run cannot say how much the difference
    would move with another seed."""
    vals = list(diffs)
    m, s = mean_std(vals)
    if len(vals) < 2:
        return m, float("nan"), float("nan")
    from scipy.stats import t  # scikit-learn already depends on scipy

    half = t.ppf(0.5 + level / 2, len(vals) - 1) * s / len(vals) ** 0.5
    return m, float(m - half), float(m + half)


def verdict(diffs: Sequence[float], direction: int = 1, level: float = 0.95, margin: float = 0.01) -> str:
    """"reproduced" when the interval of the paired difference excludes 0 in the paper's direction
    (+1: the method should be higher), "not reproduced" when it excludes 0 the other way, else
    "inconclusive". ``direction=0`` is a claim of *no* difference (from scratch catches up):
    "consistent" when the interval lies within ±``margin`` (1 point of accuracy by default),
    "not reproduced" when it excludes 0, else "inconclusive" — an interval that merely contains 0,
    as wide ones from few seeds do, does not show equality."""
    _, lo, hi = paired_interval(diffs, level)
    if lo != lo:  # nan: fewer than two seeds
        return "inconclusive"
    if direction == 0:
        if lo > 0 or hi < 0:
            return "not reproduced"
        return "consistent" if -margin <= lo and hi <= margin else "inconclusive"
    lo, hi = (lo, hi) if direction > 0 else (-hi, -lo)
    return "reproduced" if lo > 0 else "not reproduced" if hi < 0 else "inconclusive"


def fmt_interval(diffs: Sequence[float], digits: int = 2, scale: float = 100.0, level: float = 0.95) -> str:
    """'+0.41 [+0.12, +0.70]' (mean and interval of the paired difference, times ``scale``)."""
    m, lo, hi = (v * scale for v in paired_interval(diffs, level))
    if lo != lo:
        return f"{m:+.{digits}f}"
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


@dataclass(frozen=True)
class Comparison:
    """One claim a study exists to test: ``label`` (e.g. "distilled − alone"), the paired
    differences over seeds, and the paper's direction (+1 higher, −1 lower, 0 no difference)."""

    label: str
    diffs: tuple[float, ...]
    direction: int
    scale: float = 100.0  # accuracies / errors as fractions → points

    @property
    def verdict(self) -> str:
        return verdict(self.diffs, self.direction)  # "≈ 0" claims: within ±1 point (diffs are fractions)

    def row(self) -> list[str]:
        expected = {1: "> 0", -1: "< 0", 0: "≈ 0"}[self.direction]
        return [self.label, expected, fmt_interval(self.diffs, scale=self.scale), str(len(self.diffs)), self.verdict]


COMPARISON_HEADER = ["comparison (paired over seeds)", "paper", "difference, pts (95% CI)", "seeds", "verdict"]


def overall_verdict(comparisons: Sequence[Comparison]) -> str:
    """'reproduced' when every claim is; 'partly reproduced' when some are; with none reproduced,
    'not reproduced' when an interval contradicts a claim, else 'inconclusive'."""
    verdicts = [c.verdict for c in comparisons]
    good = [v in ("reproduced", "consistent") for v in verdicts]
    if all(good):
        return "reproduced"
    if any(good):
        return "partly reproduced"
    return "not reproduced" if "not reproduced" in verdicts else "inconclusive"
