"""The instruments behind every verdict: p, Holm, the minimum detectable effect, the equivalence
test, preconditions — and a tiny study on digits whose comparisons CSV carries them all and says
"not testable here" when its teacher is not ahead of its student."""

import csv
import json

import pytest
import yaml

from distillab.cli import main
from distillab.results.stats import (Comparison, Precondition, assess, equivalence_p, fmt_pm, holm,
                                     min_detectable_effect, paired_interval, paired_p)


def test_holm_matches_the_step_down_rule():
    # sorted p's 0.01, 0.02, 0.04 with m = 3: 0.03, 0.04, max(0.04, 0.04) — and back in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, float("nan"), 0.01])[2] == pytest.approx(0.02)  # untested claims are not counted
    assert holm([0.3, 0.6])[1] == pytest.approx(0.6)  # monotone and capped at 1


def test_a_collapsed_run_is_left_out_and_said_so():
    nan = float("nan")  # what a study gives a collapsed run's test accuracy (recipes/study.py)
    assert fmt_pm([0.90, nan, 0.92], 2, 100) == "91.00 ± 1.41 (1 collapsed)"
    assert fmt_pm([nan, nan], 2, 100) == "— (2 collapsed)"
    diffs = (0.010, nan, 0.012, 0.011)  # one seed pair lost: paired over the other three, never a NaN result
    assert paired_interval(diffs) == pytest.approx(paired_interval((0.010, 0.012, 0.011)))
    a = assess([Comparison("distilled − alone", diffs, +1, primary=True)])[0]
    assert a.claim.collapsed == 1 and a.verdict == "reproduced"
    row = a.row()
    assert row[3] == "3 of 4" and "1 of 4 seed pair(s) left out: a run collapsed" in row[-1]
    assert "nan" not in " ".join(row)
    # fewer than two pairs left: not testable, not "inconclusive" as if the seeds had spoken
    gone = assess([Comparison("distilled − alone", (nan, 0.01, nan), +1, primary=True)])[0]
    assert gone.verdict == "not testable here" and "2 of 3 seed pair(s) left out" in gone.row()[-1]


def test_minimum_detectable_effect_shrinks_with_seeds():
    # KD's paired sd of 0.35 pt: 1.14 pt at 3 seeds, 0.59 at 5, 0.35 at 10 (80 % power, alpha 0.05)
    assert [round(min_detectable_effect(0.35, n), 2) for n in (3, 5, 10)] == [1.14, 0.59, 0.35]
    assert min_detectable_effect(0.35, 1) == float("inf")


def test_paired_and_equivalence_p():
    diffs = (0.010, 0.012, 0.011)
    assert paired_p(diffs) < 0.01
    assert paired_p((0.01, -0.012, 0.004)) > 0.5
    assert equivalence_p((0.001, -0.001, 0.0005), 0.01) < 0.05  # well within ±1 point
    assert equivalence_p(diffs, 0.01) > 0.05  # 1.1 points apart: not shown within ±1


def test_secondary_claims_are_holm_adjusted_and_the_primary_is_not():
    strong = (0.010, 0.012, 0.011, 0.0105, 0.0115)
    weak = (0.004, 0.001, 0.006, 0.002, 0.005)  # p ≈ 0.02 alone
    claims = [Comparison("primary", weak, +1, primary=True)] + [Comparison(f"s{i}", weak, +1) for i in range(3)]
    out = assess(claims)
    assert out[0].verdict == "reproduced" and out[0].p_adjusted == out[0].p
    assert all(a.p_adjusted == pytest.approx(min(1, 3 * a.p)) for a in out[1:])
    assert all(a.verdict.startswith("inconclusive") for a in out[1:])  # 3 x 0.02 > 0.05
    assert assess([Comparison("s", strong, +1), Comparison("t", strong, +1)])[0].verdict == "reproduced"


def test_a_failed_precondition_makes_a_claim_not_testable():
    lead = Precondition("teacher − student alone (val)", 0.4, 1.5)
    claim = Comparison("distilled − alone", (0.010, 0.012, 0.011), +1, primary=True, preconditions=(lead,))
    a = assess([claim])[0]
    assert a.verdict == "not testable here"
    assert "✗ teacher − student alone (val) +0.40 ≥ 1.5" in a.row()[7]
    assert Precondition("gap", 0.2, 0.3, at_most=True).ok and not Precondition("gap", float("nan"), 0.3).ok


def test_every_run_logs_training_accuracy(tmp_path):
    cfg = {"recipe": "train", "name": "m", "data": {"source": "digits", "val_size": 200, "batch_size": 64},
           "model": {"name": "mlp:32"}, "train": {"epochs": 3, "optim": {"lr": 0.1}}, "seeds": [0]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "o" / "m" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    accs = [r["train_acc"] for r in lines]
    assert len(accs) == 3 and all(0 <= a <= 1 for a in accs) and accs[-1] > 0.5  # above chance (10 %)
    summary = json.loads((tmp_path / "o" / "m" / "seed0" / "summary.json").read_text())
    assert summary["train_acc"] == accs[-1]


@pytest.mark.slow
def test_tiny_study_writes_every_column_and_says_not_testable_here(tmp_path, capsys):
    # A "teacher" smaller than its student on digits: it cannot lead the student alone by 50 points,
    # so the primary claim is not testable, whatever the test accuracies say.
    data = {"source": "digits", "val_size": 200, "batch_size": 64}
    train = {"epochs": 3, "optim": {"lr": 0.1}}
    cfg = {"recipe": "hinton", "data": data, "seeds": [0, 1, 2], "teacher_lead": 50.0,
           "teacher": {"model": {"name": "mlp:8"}, "train": train},
           "student": {"model": {"name": "mlp:64"}, "train": train},
           "distill": {"temperature": 2, "alpha": 0.5}}
    (tmp_path / "h.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert main(["run", str(tmp_path / "h.yaml"), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "results-comparisons.csv").open()))
    assert len(rows) == 1
    row = rows[0]
    for column in ("p", "Holm p", "MDE, pts", "preconditions (validation)", "seeds"):
        assert row[column] not in ("", None)
    assert row["seeds"] == "3" and float(row["MDE, pts"]) >= 0
    assert (
        row["verdict"] == "not testable here" and "✗ teacher − student alone (val)" in row["preconditions (validation)"]
    )
    md = (out / "results.md").read_text()
    assert "**Verdict: not testable here** (primary claim: distilled − student alone" in md


def test_mde_is_exact_at_two_seeds():
    # at 1 degree of freedom scipy's non-central t fails in the tail; the quadrature does not
    assert min_detectable_effect(1.0, 2) == pytest.approx(11.55, abs=0.01)


def _curve(tmp_path, name, accs, val_n=5000):
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "val_acc": a}) + "\n"
                                             for i, a in enumerate(accs)))
    (d / "summary.json").write_text(json.dumps({"val_n": val_n}))
    return d


def test_convergence_fails_a_run_still_climbing_and_tolerates_noise(tmp_path):
    from distillab.recipes.preconditions import converged

    climbing = _curve(tmp_path, "up", [0.70 + 0.005 * i for i in range(40)])  # +0.5 pt per epoch to the end
    assert not converged([climbing], "teacher").ok
    falling = _curve(tmp_path, "down", [0.80] * 20 + [0.78] * 20)  # 2 points below its best
    assert not converged([falling], "teacher").ok
    flat = [0.86, 0.8642, 0.8597, 0.8611, 0.8589, 0.8633, 0.8604, 0.8620] * 5  # ±0.2 pt noise, no trend
    assert converged([_curve(tmp_path, "flat", flat)], "teacher").ok
    assert not converged([tmp_path / "nowhere"], "teacher").ok  # no validation curve: cannot be shown


def test_a_tuning_key_that_does_not_exist_fails_before_any_run(tmp_path, capsys):
    cfg = {"recipe": "benchmark", "data": {"source": "digits", "val_size": 200}, "seeds": [0],
           "teacher": {"model": {"name": "mlp:8"}}, "student": {"model": {"name": "mlp:4"}},
           "methods": {"AT": {"name": "at"}, "KD": {"name": "kd"}},
           "tune": {"grid": {"AT": {"method.beta": [1, 2]}, "KD": {"method.temperature": [2, 4]}}}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "method.beta: no such key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    no_val = {**cfg, "data": {"source": "digits", "val_size": 0}, "tune": {}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(no_val))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "preconditions: false" in capsys.readouterr().err


def test_slope_is_the_least_squares_trend():
    from distillab.results.stats import slope

    assert slope([0, 1, 2, 3], [3.0, 2.0, 1.0, 0.0]) == -1.0
    assert abs(slope([0, 1, 2], [0.0, 1.0, 5.0]) - 2.5) < 1e-12
    with pytest.raises(ValueError):
        slope([1, 1], [0.0, 1.0])
