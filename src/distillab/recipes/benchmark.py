"""Recipe ``benchmark``: one teacher, the student alone, and the student under each listed method,
on the same data and schedule, over seeds — one table sorted by accuracy (RepDistiller/mdistiller
layout) with the paired gain over the student alone and its 95 % interval, cost columns, and the
training seconds per epoch of each method.

``methods`` maps a row label to a method's own config (``{name: kd, temperature: 4}``,
``{name: crd}``, …; see ``distillab list methods``); the recipe fills in the teacher. Within a
seed, every student starts from the same initialisation and sees the same batch order as the
student alone (common random numbers): the paired difference then measures the method, not the
luck of the draw. Different seeds differ in both.

The primary claim — the gain of ``primary`` (KD by default) over the student alone — is declared
here before any run and tested alone; every other method's gain is Holm-adjusted with the rest.
Each claim needs a teacher ahead of the student alone on validation (``teacher_lead`` points) and
a converged teacher and student alone; else it is "not testable here". ``primary_seeds`` gives the
primary arms more seeds than the rest; ``shared_teacher`` trains one teacher for every seed, as
RepDistiller ships one; ``tune`` gives every method and the student alone the same number of
validation trials (recipes/tuning.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distillab.config import DataConfig, Strict, Seeds
from distillab.engine.run import RunSpec
from distillab.methods import MethodConfig
from distillab.profile import human
from distillab.recipes.preconditions import converged, val_lead
from distillab.recipes.registry import register_recipe
from distillab.recipes.study import Role, Study
from distillab.recipes.tuning import TuneConfig, check_grid, tune, tuning_table
from distillab.results.stats import Comparison, assess, fmt_interval, fmt_pm, mean_std

# A method's gain over the student alone, in the benchmark's words.
VERDICT = {"reproduced": "helps", "not reproduced": "hurts", "inconclusive": "inconclusive",
           "not testable here": "not testable here"}


class BenchmarkRecipe(Strict):
    recipe: Literal["benchmark"] = "benchmark"
    data: DataConfig = DataConfig()
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    primary: str | None = Field(None, description="the method (row label) whose gain over the student alone is the "
                                                  "primary claim; default: KD if listed, else the first method")
    primary_seeds: Seeds = Field(default_factory=list, description="extra seeds run only by the primary method "
                                                                       "and the student alone")
    shared_teacher: bool = Field(False, description="one teacher, trained at the first seed, for every seed")
    teacher_lead: float = Field(1.0, description="points of validation accuracy the teacher must lead the student "
                                                 "alone by for any claim to be testable")
    preconditions: bool = Field(True, description="measure the preconditions on validation (false: test the claims "
                                                  "without them, for a protocol with no validation split)")
    teacher: Role
    student: Role = Field(description="architecture and schedule shared by the student alone and every method")
    methods: dict[str, MethodConfig] = Field(min_length=1, description="row label → method config")
    tune: TuneConfig = TuneConfig()

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

    @model_validator(mode="after")
    def _roles(self) -> "BenchmarkRecipe":
        if self.primary is not None and self.primary not in self.methods:
            raise ValueError(f"primary: {self.primary!r} is not one of the methods ({', '.join(self.methods)})")
        if set(self.primary_seeds) & set(self.seeds):
            raise ValueError("primary_seeds: these are extra seeds; do not repeat seeds already in 'seeds'")
        if self.preconditions and not self.data.val_size:
            raise ValueError("preconditions are measured on validation: set data.val_size > 0, or preconditions: "
                             "false to test the claims without them (the table then says so)")
        student = RunSpec(data=self.data, model=self.student.model, train=self.student.train)
        arms = {"student": student, **{k: student.model_copy(update={"method": m}) for k, m in self.methods.items()}}
        check_grid(self.tune, self.seeds + self.primary_seeds, arms, "'student' nor a method label")
        return self

    @property
    def primary_label(self) -> str:
        return self.primary or ("KD" if "KD" in self.methods else next(iter(self.methods)))


@register_recipe(BenchmarkRecipe)
def run(cfg: BenchmarkRecipe, out: Path, study: Study) -> str:
    primary = cfg.primary_label
    teacher_spec = RunSpec(data=cfg.data, **cfg.teacher.model_dump())
    teachers: dict[int, dict] = {}

    def teacher_dir(seed: int) -> str:
        """The teacher a seed's students read (trained on first use)."""
        t_seed = cfg.seeds[0] if cfg.shared_teacher else seed
        if t_seed not in teachers:
            teachers[t_seed] = study.run("teacher", teacher_spec, t_seed)
        return str(study.run_dir("teacher", t_seed))

    student = RunSpec(data=cfg.data, model=cfg.student.model, train=cfg.student.train)
    specs: dict[str, RunSpec] = {"student": student}
    for label, method in cfg.methods.items():
        specs[label] = student.model_copy(update={"method": method})
    tune_rows: list[list[str]] = []
    if cfg.tune.grid:  # equal-effort trials at the pilot seed, before any seed of the table
        pilot_teacher = teacher_dir(cfg.tune.seed)
        pilot = {label: spec if label == "student" else
                 spec.model_copy(update={"method": spec.method.model_copy(update={"teacher": [pilot_teacher]})})
                 for label, spec in specs.items()}
        specs, tune_rows = tune(study, cfg.tune, pilot, seed_key="student")

    runs: dict[str, dict[int, dict]] = {"teacher": {}, "student": {}, **{k: {} for k in cfg.methods}}
    for seed in [*cfg.seeds, *cfg.primary_seeds]:
        extra = seed not in cfg.seeds  # primary arms only
        t_dir = teacher_dir(seed)
        runs["teacher"][seed] = teachers[cfg.seeds[0] if cfg.shared_teacher else seed]
        # Every student shares one run seed on purpose: each gain is a paired difference.
        runs["student"][seed] = study.run("student", specs["student"], seed, seed_key="student")
        for label in cfg.methods:
            if extra and label != primary:
                continue
            spec = specs[label]
            spec = spec.model_copy(update={"method": spec.method.model_copy(update={"teacher": [t_dir]})})
            runs[label][seed] = study.run(label, spec, seed, seed_key="student")

    teacher_runs = {cfg.seeds[0]: teachers[cfg.seeds[0]]} if cfg.shared_teacher else runs["teacher"]
    pre = (
        ()
        if not cfg.preconditions
        else (
            val_lead(
                list(teacher_runs.values()), list(runs["student"].values()), cfg.teacher_lead, "teacher − student alone"
            ),
            converged([study.run_dir("teacher", s) for s in teacher_runs], "teacher"),
            converged([study.run_dir("student", s) for s in runs["student"]], "student alone"),
        )
    )

    def gain(label: str) -> tuple[float, ...]:
        return tuple(r["test_acc"] - runs["student"][s]["test_acc"] for s, r in runs[label].items())

    labels = sorted(cfg.methods, key=lambda k: k != primary)  # the primary claim first
    comparisons = [Comparison(f"{label} − student alone", gain(label), +1, primary=label == primary, preconditions=pre)
                   for label in labels]
    verdicts = dict(zip(labels, assess(comparisons), strict=True))
    header = ["method", "model", "test acc (%)", "seeds", "gain vs student alone (pts, 95% CI)", "verdict",
              "# params", "# mult-adds", "train s/epoch"]

    def row(label: str, role: Role) -> tuple[float, list[str]]:
        rs = list(runs[label].values()) if label != "teacher" else list(teacher_runs.values())
        acc = [r["test_acc"] for r in rs]
        per_epoch = mean_std([r["train_seconds"] / r["epochs"] for r in rs])
        is_method = label not in ("teacher", "student")
        name = (f"{label} (primary)" if label == primary else label) if is_method else label.capitalize()
        return mean_std(acc)[0], [name, role.model.name, fmt_pm(acc, 2, 100), str(len(rs)),
                                  fmt_interval(gain(label)) if is_method else "—",
                                  VERDICT[verdicts[label].verdict] if is_method else "—", human(rs[0]["params"]),
                                  human(rs[0]["macs"]), f"{per_epoch[0]:.2f}"]

    teacher_row = row("teacher", cfg.teacher)[1]
    student_row = row("student", cfg.student)[1]
    # best first; a method whose every run collapsed (mean NaN: left out) last
    method_rows = sorted((row(k, cfg.student) for k in cfg.methods),
                         key=lambda t: (t[0] != t[0], -t[0] if t[0] == t[0] else 0))
    rows = [teacher_row, student_row, *(r for _, r in method_rows)]
    first = runs["student"][cfg.seeds[0]]
    seeds_note = (f"{len(cfg.seeds)} seed(s) for every method"
                  + (f", {len(cfg.seeds) + len(cfg.primary_seeds)} for {primary} and the student alone"
                     if cfg.primary_seeds else "")
                  + ("; one teacher shared by every seed" if cfg.shared_teacher else "; a teacher per seed")
                  + ("" if cfg.preconditions else "; preconditions not checked (no validation split)"))
    notes = (f"{cfg.data.source}, {first['test_n']} test images, {seeds_note}: mean ± std. Gain: paired "
             f"difference to the student alone on the same seed (same init and batch order), mean and 95 % "
             f"Student-t interval; verdict 'helps' / 'hurts' = reproduced / not reproduced below (the primary "
             f"claim, {primary}, tested alone; the other methods Holm-adjusted). Mult-adds of one forward pass; "
             f"train s/epoch measured on {first.get('device', 'cpu')} in these runs (connectors and the teacher's "
             f"forward included).")
    table = tuning_table(tune_rows, cfg.tune)
    if table:
        notes += "\n\n" + table
    return study.write_table("results", "Distillation benchmark: one teacher, one student, every method",
                             header, rows, notes, comparisons)
