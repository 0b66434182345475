"""Mean ± std over seeds, and tables rendered as Markdown or CSV.

A NaN value is a run left out: a study gives a collapsed run (one the watchdog found at chance,
engine/watchdog.py) NaN test metrics (recipes/study.py), so every mean, std, interval and p here
is computed over the other runs, and tables and verdicts say how many were left out."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def kept(values: Sequence[float]) -> list[float]:
    """The values that are not NaN (a NaN is a collapsed run, left out of every statistic)."""
    return [v for v in values if v == v]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the values that are not NaN."""
    vals = kept(values)
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_pm(values: Sequence[float], digits: int = 2, scale: float = 1.0) -> str:
    """'90.12 ± 0.31' (values multiplied by ``scale``); '90.12 ± 0.31 (1 collapsed)' when a value is
    NaN (a collapsed run, left out of the mean)."""
    vals = list(values)
    left_out = len(vals) - len(kept(vals))
    if vals and left_out == len(vals):
        return f"— ({left_out} collapsed)"
    m, s = mean_std([v * scale for v in vals])
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (f" ({left_out} collapsed)" if left_out else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"  # noqa: E731
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
    would move with another seed. NaN differences (a collapsed run) are left out."""
    vals = kept(diffs)
    m, s = mean_std(vals)
    if len(vals) < 2:
        return m, float("nan"), float("nan")
    from scipy.stats import t  # scikit-learn already depends on scipy

    half = t.ppf(0.5 + level / 2, len(vals) - 1) * s / len(vals) ** 0.5
    return m, float(m - half), float(m + half)


def paired_p(diffs: Sequence[float]) -> float:
    """Two-sided p of the paired t-test of "mean difference = 0" (nan below two seeds; 0 or 1 when
    every difference is the same number: no spread, so no doubt); NaN differences left out."""
    vals = kept(diffs)
    if len(vals) < 2:
        return float("nan")
    m, s = mean_std(vals)
    if s == 0:
        return 0.0 if m != 0 else 1.0
    from scipy.stats import t

    return float(2 * t.sf(abs(m) / (s / len(vals) ** 0.5), len(vals) - 1))


def equivalence_p(diffs: Sequence[float], margin: float) -> float:
    """p of the two one-sided tests (TOST) that the mean difference lies within ±``margin``: the
    larger of the p's of "mean ≤ −margin" and "mean ≥ +margin". Below ``alpha`` it shows the two arms
    equal within the margin; an interval that merely contains 0 does not. NaN differences left out."""
    vals = kept(diffs)
    if len(vals) < 2:
        return float("nan")
    m, s = mean_std(vals)
    if s == 0:
        return 0.0 if abs(m) < margin else 1.0
    from scipy.stats import t

    se, df = s / len(vals) ** 0.5, len(vals) - 1
    return float(max(t.sf((m + margin) / se, df), t.cdf((m - margin) / se, df)))


def _t_test_power(nc: float, df: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test at ``alpha`` for non-centrality ``nc``: the t
    statistic is (Z + nc) / sqrt(V / df) with V ~ chi²(df), integrated over V (exact for every df;
    scipy's non-central t returns nan far in its tail, at df = 1 already below 80 % power)."""
    from scipy import integrate
    from scipy.stats import chi2, norm, t

    crit = t.ppf(1 - alpha / 2, df)

    def given(v: float) -> float:
        c = crit * math.sqrt(v / df)
        return (norm.sf(c - nc) + norm.cdf(-c - nc)) * chi2.pdf(v, df)

    return float(integrate.quad(given, 0, math.inf, limit=200)[0])


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` detects with
    probability ``power``, for ``n`` seeds and a spread of paired differences ``sd`` (exact, from the
    non-central t). With 3 seeds and sd 0.35 pt it is 1.14 pt; with 10, 0.35 pt."""
    if n < 2 or sd != sd:
        return float("inf")
    if sd == 0:
        return 0.0
    from scipy.optimize import brentq

    nc = brentq(lambda x: _t_test_power(x, n - 1, alpha) - power, 0.0, 200.0)
    return float(nc * sd / n ** 0.5)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` on ``xs`` — one seed's trend, so that a trend over several
    settings is tested as *one* paired claim over seeds (the slopes) instead of one test per
    setting."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("slope needs two or more (x, y) pairs")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("slope needs at least two distinct x")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p's is multiplied by (m − i + 1), and
    adjusted p's never decrease along that order. Rejecting where the adjusted p < alpha keeps the
    chance of any false claim in the family at most alpha. nan p's (untested claims) stay nan."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def fmt_interval(diffs: Sequence[float], digits: int = 2, scale: float = 100.0, level: float = 0.95) -> str:
    """'+0.41 [+0.12, +0.70]' (mean and interval of the paired difference, times ``scale``)."""
    m, lo, hi = (v * scale for v in paired_interval(diffs, level))
    if lo != lo:
        return f"{m:+.{digits}f}"
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


@dataclass(frozen=True)
class Precondition:
    """What a claim needs before its test means anything, measured on validation: e.g. "teacher −
    student alone ≥ 1.5 pts" or "teacher converged (best − last quarter ≤ 0.3 pt)". ``value`` and
    ``need`` are in the unit shown (points); ``at_most`` flips the comparison."""

    label: str
    value: float
    need: float
    at_most: bool = False

    @property
    def ok(self) -> bool:
        return self.value == self.value and (self.value <= self.need if self.at_most else self.value >= self.need)

    def text(self) -> str:
        """'✓ teacher − student alone (val) +2.31 ≥ 1.5' (✗ when it fails)."""
        return f"{'✓' if self.ok else '✗'} {self.label} {self.value:+.2f} {'≤' if self.at_most else '≥'} {self.need:g}"


@dataclass(frozen=True)
class Comparison:
    """One claim a study exists to test: ``label`` (e.g. "distilled − alone"), the paired
    differences over seeds, and the paper's direction (+1 higher, −1 lower, 0 no difference within
    ±``margin``). ``primary``: the study's headline claim, declared in the recipe before any run and
    tested alone at alpha; the others are Holm-adjusted together. ``preconditions`` that fail make
    the claim "not testable here"."""

    label: str
    diffs: tuple[float, ...]
    direction: int
    scale: float = 100.0  # accuracies / errors as fractions → points
    primary: bool = False
    margin: float = 0.01  # "≈ 0" claims: within ±1 point (diffs are fractions)
    preconditions: tuple[Precondition, ...] = ()

    @property
    def testable(self) -> bool:
        return all(c.ok for c in self.preconditions)

    @property
    def p(self) -> float:
        """The claim's own p: paired t-test against 0, or for "≈ 0" claims the equivalence test."""
        return equivalence_p(self.diffs, self.margin) if self.direction == 0 else paired_p(self.diffs)

    @property
    def collapsed(self) -> int:
        """Seeds left out because a run of either arm collapsed (its difference is NaN)."""
        return len(self.diffs) - len(kept(self.diffs))

    @property
    def mde(self) -> float:
        """Minimum detectable effect (80 % power, alpha 0.05, two-sided), in the table's unit."""
        return min_detectable_effect(mean_std(self.diffs)[1], len(kept(self.diffs))) * self.scale

    def decide(self, p_adjusted: float, alpha: float = 0.05) -> str:
        """The verdict given the claim's (adjusted) p — see :func:`assess`. Collapsed runs that leave
        fewer than two seed pairs make the claim untestable, not merely inconclusive."""
        if not self.testable or (self.collapsed and len(self.diffs) - self.collapsed < 2):
            return "not testable here"
        if p_adjusted != p_adjusted:
            return "inconclusive"
        m, lo, hi = paired_interval(self.diffs)
        if self.direction == 0:
            if p_adjusted < alpha:
                return "consistent"
            outside = lo > self.margin or hi < -self.margin  # shown to differ by more than the margin
            return "not reproduced" if outside else "inconclusive"
        if p_adjusted < alpha:
            return "reproduced" if m * self.direction > 0 else "not reproduced"
        return "inconclusive"

    @property
    def verdict(self) -> str:
        """The verdict of this claim tested on its own (no multiplicity adjustment)."""
        return self.decide(self.p)


@dataclass(frozen=True)
class Assessed:
    """A claim with its p, Holm-adjusted p and verdict within its study's family of claims."""

    claim: Comparison
    p: float
    p_adjusted: float
    verdict: str

    def row(self) -> list[str]:
        c = self.claim
        expected = {1: "> 0", -1: "< 0", 0: f"≈ 0 (±{c.margin * c.scale:g})"}[c.direction]
        verdict = self.verdict
        if verdict == "inconclusive":
            verdict += f" (MDE {c.mde:.2f})"
        seeds = str(len(c.diffs))
        if c.collapsed:  # said in the verdict itself: fewer pairs are never pooled silently
            seeds = f"{len(c.diffs) - c.collapsed} of {len(c.diffs)}"
            verdict += (f" — {c.collapsed} of {len(c.diffs)} seed pair(s) left out: a run collapsed "
                        f"(at chance, see the warning)")
        pre = "; ".join(x.text() for x in c.preconditions) or "—"
        interval = fmt_interval(c.diffs, scale=c.scale) if len(c.diffs) > c.collapsed else "—"
        return [("primary: " if c.primary else "") + c.label, expected, interval,
                seeds, _fmt_p(self.p), _fmt_p(self.p_adjusted), f"{c.mde:.2f}", pre, verdict]


def _fmt_p(p: float) -> str:
    return "—" if p != p else f"{p:.3g}" if p >= 0.001 else "<0.001"


def assess(comparisons: Sequence[Comparison], alpha: float = 0.05) -> list[Assessed]:
    """p, adjusted p and verdict of each claim of a study.

    The primary claim is tested alone at ``alpha``; the secondary claims that are testable (their
    preconditions hold) form one family whose p's are Holm-adjusted, so the chance that any of them
    is called wrongly stays at most ``alpha``. Verdicts: "reproduced" / "not reproduced" (adjusted
    p < alpha, in / against the paper's direction), "consistent" (a "≈ 0" claim whose equivalence
    test passes), "not testable here" (a precondition failed), else "inconclusive" (shown with the
    effect these seeds could have detected)."""
    raw = [c.p if c.testable else float("nan") for c in comparisons]
    secondary = [i for i, c in enumerate(comparisons) if not c.primary]
    adjusted = list(raw)
    for i, q in zip(secondary, holm([raw[i] for i in secondary]), strict=True):
        adjusted[i] = q
    return [Assessed(c, p, q, c.decide(q, alpha)) for c, p, q in zip(comparisons, raw, adjusted, strict=True)]


COMPARISON_HEADER = ["comparison (paired over seeds)", "paper", "difference, pts (95% CI)", "seeds", "p",
                     "Holm p", "MDE, pts", "preconditions (validation)", "verdict"]

GOOD = ("reproduced", "consistent")


def overall_verdict(comparisons: Sequence[Comparison]) -> str:
    """The study's headline for these claims (see :func:`headline`)."""
    return headline(assess(comparisons))


def headline(assessed: Sequence[Assessed]) -> str:
    """The primary claim's verdict when one is declared; otherwise 'reproduced' when every claim
    is, 'partly reproduced' when some are, and with none reproduced 'not testable here' when none
    could be tested, 'not reproduced' when a claim is contradicted, else 'inconclusive'."""
    for a in assessed:
        if a.claim.primary:
            return a.verdict
    verdicts = [a.verdict for a in assessed]
    good = [v in GOOD for v in verdicts]
    if all(good):
        return "reproduced"
    if any(good):
        return "partly reproduced"
    if all(v == "not testable here" for v in verdicts):
        return "not testable here"
    return "not reproduced" if "not reproduced" in verdicts else "inconclusive"
