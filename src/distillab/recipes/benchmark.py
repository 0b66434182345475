"""Recipe ``benchmark``: one teacher, the student alone, and the student under each listed method,
on the same data and schedule, over seeds — one table sorted by accuracy (RepDistiller/mdistiller
layout) with the paired gain over the student alone and its 95 % interval, cost columns, and the
training seconds per epoch of each method.

``methods`` maps a row label to a method's own config (``{name: kd, temperature: 4}``,
``{name: crd}``, …; see ``distillab list methods``); the recipe fills in the teacher. Within a
seed, every student starts from the same initialisation and sees the same batch order as the
student alone (common random numbers): the paired difference then measures the method, not the
luck of the draw. Different seeds differ in both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from distillab.config import DataConfig, Strict, Seeds
from distillab.engine.run import RunSpec
from distillab.methods import MethodConfig
from distillab.profile import human
from distillab.recipes.study import Role, Study
from distillab.results.stats import fmt_interval, fmt_pm, mean_std, verdict


# The paired interval says whether the method helps this student: above 0, below 0, or either.
VERDICT = {"reproduced": "helps", "not reproduced": "hurts", "inconclusive": "inconclusive"}


class BenchmarkRecipe(Strict):
    recipe: Literal["benchmark"] = "benchmark"
    data: DataConfig = DataConfig()
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    teacher: Role
    student: Role = Field(description="architecture and schedule shared by the student alone and every method")
    methods: dict[str, MethodConfig] = Field(min_length=1, description="row label → method config")

    @field_validator("methods")
    @classmethod
    def _labels(cls, v: dict[str, MethodConfig]) -> dict[str, MethodConfig]:
        for label, m in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]*", label):  # no '.', '..' or hidden name
                raise ValueError(f"label {label!r}: use letters, digits, '_', '.', '+', '-', not starting with '.' "
                                 f"(it names a folder)")
            if getattr(m, "teacher", None):
                raise ValueError(f"{label}: the benchmark trains its own teacher; remove 'teacher'")
            if label in ("teacher", "student"):
                raise ValueError(f"label {label!r} is reserved")
        return v


def count_runs(cfg: BenchmarkRecipe) -> int:
    return len(cfg.seeds) * (2 + len(cfg.methods))


def run(cfg: BenchmarkRecipe, out: Path, study: Study) -> str:
    runs: dict[str, list[dict]] = {"teacher": [], "student": [], **{k: [] for k in cfg.methods}}
    for seed in cfg.seeds:
        runs["teacher"].append(study.run("teacher", RunSpec(data=cfg.data, **cfg.teacher.model_dump()), seed))
        student = dict(data=cfg.data, model=cfg.student.model, train=cfg.student.train)
        # Every student shares one run seed on purpose: each gain is a paired difference.
        runs["student"].append(study.run("student", RunSpec(**student), seed, seed_key="student"))
        teacher = [str(study.run_dir("teacher", seed))]
        for label, method in cfg.methods.items():
            m = method.model_copy(update={"teacher": teacher})
            runs[label].append(study.run(label, RunSpec(**student, method=m), seed, seed_key="student"))

    alone = [r["test_acc"] for r in runs["student"]]
    header = ["method", "model", "test acc (%)", "gain vs student alone (pts, 95% CI)", "verdict",
              "# params", "# mult-adds", "train s/epoch"]

    def row(label: str, role: Role) -> tuple[float, list[str]]:
        rs = runs[label]
        acc = [r["test_acc"] for r in rs]
        gain = [a - b for a, b in zip(acc, alone)]
        per_epoch = mean_std([r["train_seconds"] / r["epochs"] for r in rs])
        is_method = label not in ("teacher", "student")
        return mean_std(acc)[0], [label if is_method else label.capitalize(), role.model.name, fmt_pm(acc, 2, 100),
                                  fmt_interval(gain) if label != "student" else "—",
                                  VERDICT[verdict(gain)] if is_method else "—", human(rs[0]["params"]),
                                  human(rs[0]["macs"]), f"{per_epoch[0]:.2f}"]

    teacher_row = row("teacher", cfg.teacher)[1]
    student_row = row("student", cfg.student)[1]
    method_rows = sorted((row(k, cfg.student) for k in cfg.methods), key=lambda t: -t[0])
    rows = [teacher_row, student_row, *(r for _, r in method_rows)]
    n_test = runs["student"][0]["test_n"]
    device = runs["student"][0].get("device", "cpu")
    notes = (f"{cfg.data.source}, {n_test} test images, {len(cfg.seeds)} seed(s): mean ± std. Gain: paired "
             f"difference to the student alone on the same seed (same init and batch order), mean and 95 % "
             f"Student-t interval; verdict 'helps' = the interval lies above 0, 'hurts' = below 0, else "
             f"'inconclusive'. Mult-adds of one forward pass; "
             f"train s/epoch measured on {device} in these runs (connectors and the teacher's forward included).")
    return study.write_table("results", "Distillation benchmark: one teacher, one student, every method",
                             header, rows, notes)
