"""Recipe ``hinton``: Hinton, Vinyals & Dean 2015 — a big regularised teacher, a small student
trained alone, and the same student trained on the teacher's soft targets (docs/studies/hinton.md).
Table in the lecture's layout, mean ± std over seeds, and the paired gain with its interval."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distillab.config import AugmentConfig, DataConfig, ModelConfig, Strict, TrainConfig, Seeds
from distillab.engine.run import RunSpec
from distillab.methods.kd import KDConfig
from distillab.recipes.preconditions import converged, val_lead
from distillab.recipes.registry import register_recipe
from distillab.recipes.study import Study
from distillab.recipes.tuning import TuneConfig, check_grid, tune, tuning_table
from distillab.results.stats import Comparison, fmt_pm


class Role(Strict):
    """A model, its augmentation and its training schedule."""

    model: ModelConfig
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()


class Distill(KDConfig):
    """The distilled student's loss — :class:`~distillab.methods.kd.KDConfig` itself, so every key
    and default (temperature, alpha, …) has one home — plus its training schedule."""

    train: TrainConfig | None = Field(None, description="defaults to the student's schedule")

    @field_validator("teacher")
    @classmethod
    def _filled_by_recipe(cls, v: list[str]) -> list[str]:
        if v:
            raise ValueError("the hinton recipe trains its own teacher; remove distill.teacher")
        return v


class HintonRecipe(Strict):
    recipe: Literal["hinton"] = "hinton"
    data: DataConfig = DataConfig()
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    teacher: Role
    student: Role
    distill: Distill = Distill()
    teacher_lead: float = Field(1.0, description="points of validation accuracy the teacher must lead the student "
                                                 "alone by for the claims to be testable")
    shared_teacher: bool = Field(False, description="one teacher, trained at the first seed, for every seed (as "
                                                    "RepDistiller ships one); the claim is then about that teacher")
    tune: TuneConfig = Field(TuneConfig(), description="equal-effort validation grid for the arms 'student' and "
                                                       "'distilled' at a pilot seed (e.g. train.optim.lr, "
                                                       "method.temperature)")

    @model_validator(mode="after")
    def _tune_arms(self) -> "HintonRecipe":
        arms = {arm: self._student_spec(arm, "teacher") for arm in ("student", "distilled")}
        check_grid(self.tune, self.seeds, arms, "'student' nor 'distilled'")
        return self

    def _student_spec(self, arm: str, teacher_dir: str) -> RunSpec:
        """The run spec of the student alone (``arm='student'``) or distilled from ``teacher_dir``."""
        spec = RunSpec(data=self.data.model_copy(update={"augment": self.student.augment}), model=self.student.model,
                       train=self.student.train)
        if arm == "student":
            return spec
        kd = KDConfig.model_validate({**self.distill.model_dump(exclude={"train"}), "teacher": [teacher_dir]})
        return spec.model_copy(update={"method": kd, "train": self.distill.train or self.student.train})


def _hidden(model: ModelConfig) -> str:
    """'2x1200' for mlp:1200-1200, else the model name."""
    name = model.name
    if name.startswith("mlp:"):
        widths = name[4:].split("-")
        return f"{len(widths)}x{widths[0]}" if len(set(widths)) == 1 else name[4:]
    return name


@register_recipe(HintonRecipe)
def run(cfg: HintonRecipe, out: Path, study: Study) -> str:
    def spec(role: Role, **kw) -> RunSpec:
        return RunSpec(data=cfg.data.model_copy(update={"augment": role.augment}), model=role.model,
                       train=role.train, **kw)

    teachers: dict[int, dict] = {}

    def teacher_dir(seed: int) -> str:
        """The teacher a seed's distilled student reads (trained on first use)."""
        t_seed = cfg.seeds[0] if cfg.shared_teacher else seed
        if t_seed not in teachers:
            teachers[t_seed] = study.run("teacher", spec(cfg.teacher), t_seed)
        return str(study.run_dir("teacher", t_seed))

    specs = {"student": cfg._student_spec("student", ""), "distilled": None}
    tune_rows: list[list[str]] = []
    if cfg.tune.grid:  # equal-effort trials at the pilot seed, before any seed of the table
        pilot = {arm: cfg._student_spec(arm, teacher_dir(cfg.tune.seed)) for arm in ("student", "distilled")}
        chosen, tune_rows = tune(study, cfg.tune, pilot, seed_key="student")
        specs = {"student": chosen["student"], "distilled": chosen["distilled"]}

    results: dict[str, list[dict]] = {"teacher": [], "student": [], "distilled": []}
    for seed in cfg.seeds:
        t_dir = teacher_dir(seed)
        results["teacher"].append(teachers[cfg.seeds[0] if cfg.shared_teacher else seed])
        # The student alone and the distilled student share their run seed on purpose (same init,
        # same batch order): the gain is then a paired difference, free of init noise.
        results["student"].append(study.run("student", specs["student"], seed, seed_key="student"))
        distilled = specs["distilled"] or cfg._student_spec("distilled", t_dir)
        method = distilled.method.model_copy(update={"teacher": [t_dir]})
        results["distilled"].append(study.run("distilled", distilled.model_copy(update={"method": method}), seed,
                                              seed_key="student"))

    labels = {
        "teacher": f"Teacher ({_hidden(cfg.teacher.model)}{_regularisers(cfg.teacher)})",
        "student": f"Student alone ({_hidden(cfg.student.model)}{_regularisers(cfg.student)})",
        "distilled": f"Distilled student ({_hidden(cfg.student.model)}, soft targets T={cfg.distill.temperature:g}, "
                     f"alpha={cfg.distill.alpha:g})",
    }
    hidden = {"teacher": _hidden(cfg.teacher.model), "student": _hidden(cfg.student.model),
              "distilled": _hidden(cfg.student.model)}
    header = ["model", "hidden units", "test errors", "test accuracy (%)"]
    rows = [[labels[k], hidden[k], fmt_pm([r["test_errors"] for r in v], 1), fmt_pm([r["test_acc"] for r in v], 2, 100)]
            for k, v in results.items()]
    def diffs(a: str, b: str) -> tuple[float, ...]:
        return tuple(x["test_acc"] - y["test_acc"] for x, y in zip(results[a], results[b], strict=True))

    # The paper's claim, declared before any run: the distilled student beats the same student
    # trained alone — testable only with a teacher ahead of it and converged runs (validation).
    teacher_seeds = sorted(teachers)
    pre = (val_lead([teachers[s] for s in teacher_seeds], results["student"], cfg.teacher_lead,
                    "teacher − student alone"),
           converged([study.run_dir("teacher", s) for s in teacher_seeds], "teacher"),
           converged([study.run_dir("student", s) for s in cfg.seeds], "student alone"))
    comparisons = [Comparison("distilled − student alone", diffs("distilled", "student"), +1, primary=True,
                              preconditions=pre)]
    n_test = results["student"][0]["test_n"]
    notes = (f"{cfg.data.source}, {n_test} test images, {len(cfg.seeds)} seeds (mean ± std). The student alone and "
             f"the distilled student share each seed's initialisation and batch order (paired); "
             + ("one teacher (seed {}) serves every seed.".format(cfg.seeds[0]) if cfg.shared_teacher
                else "the teacher has its own."))
    table = tuning_table(tune_rows, cfg.tune)
    return study.write_table("results", "Hinton et al. 2015: distilling a big net into a small one", header, rows,
                             notes + (f"\n\n{table}" if table else ""), comparisons)


def _regularisers(role: Role) -> str:
    parts = []
    kw = role.model.kwargs
    if kw.get("dropout") or kw.get("input_dropout"):
        parts.append("dropout")
    if role.augment.jitter:
        parts.append(f"±{role.augment.jitter}px jitter")
    return (", " + ", ".join(parts)) if parts else ""
