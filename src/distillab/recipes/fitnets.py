"""Recipe ``fitnets``: Romero et al. 2015 (docs/studies/fitnets.md).

Per seed: the teacher; the thin-deep student trained alone; the student trained with KD only
(stage-2 loss from scratch); and the FitNet — stage 1 (hint training of the student up to the
guided block plus a regressor) then stage 2 (KD on the whole student, started from stage 1).
Each stage is its own run folder, so the study resumes between stages. The table adds the cost
columns of FitNets' Table 5 (params, mult-adds, speed-up, compression).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from distillab.config import DataConfig, Strict, TrainConfig, Seeds
from distillab.engine.checkpoint import load_model
from distillab.engine.run import RunSpec
from distillab.errors import UserError
from distillab.methods.fitnet import FitNetHintConfig, FitNetKDConfig
from distillab.models import get_blocks, num_blocks
from distillab.profile import cost_table, profile_models
from distillab.recipes.preconditions import converged, val_lead
from distillab.recipes.registry import register_recipe
from distillab.recipes.study import Role, Study
from distillab.results.stats import Comparison, fmt_pm
from distillab.transfer import InitConfig


class FitNetsRecipe(Strict):
    recipe: Literal["fitnets"] = "fitnets"
    data: DataConfig = DataConfig()
    teacher: Role
    student: Role
    hint: int = Field(description="teacher block whose output is the hint")
    guided: int = Field(description="student block guided by the hint")
    stage1: TrainConfig = Field(TrainConfig(epochs=5), description="hint training schedule")
    kd: FitNetKDConfig = Field(FitNetKDConfig(), description="the stage-2 loss (methods/fitnet.py's own config), "
                               "also used for the KD-only student; its teacher is filled by the recipe")
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    teacher_lead: float = Field(1.0, description="points of validation accuracy the teacher must lead the student "
                                                 "alone by for the claims to be testable")


def _check(cfg: FitNetsRecipe) -> None:
    for what, role, idx in (("hint", cfg.teacher, cfg.hint), ("guided", cfg.student, cfg.guided)):
        n = num_blocks(role.model.name, **role.model.kwargs)
        if not 0 <= idx < n:
            raise UserError(f"{what}: block {idx} out of range: {role.model.name} has {n} blocks (0..{n - 1})")


@register_recipe(FitNetsRecipe)
def run(cfg: FitNetsRecipe, out: Path, study: Study) -> str:
    _check(cfg)
    acc: dict[str, list[float]] = {"teacher": [], "student": [], "kd": [], "fitnet": []}
    summaries: dict[str, list[dict]] = {"teacher": [], "student": []}
    for seed in cfg.seeds:
        teacher = [str(study.run_dir("teacher", seed))]
        summaries["teacher"].append(study.run("teacher", RunSpec(data=cfg.data, **cfg.teacher.model_dump()), seed))
        acc["teacher"].append(summaries["teacher"][-1]["test_acc"])
        student = dict(data=cfg.data, model=cfg.student.model, train=cfg.student.train)
        # The three students share one run seed on purpose: the same initial weights (stage 1 starts
        # from them too) and batch order, so FitNet − student is a paired difference.
        summaries["student"].append(study.run("student", RunSpec(**student), seed, seed_key="student"))
        acc["student"].append(summaries["student"][-1]["test_acc"])
        kd = cfg.kd.model_copy(update={"teacher": teacher})
        acc["kd"].append(study.run("student-kd", RunSpec(**student, method=kd), seed, seed_key="student")["test_acc"])
        hint = FitNetHintConfig(teacher=teacher, hint=cfg.hint, guided=cfg.guided)
        study.run("fitnet-stage1", RunSpec(data=cfg.data, model=cfg.student.model, train=cfg.stage1, method=hint),
                  seed, seed_key="student")
        # Stage 2 starts from every block of the stage-1 student (those above the guided block are
        # still at their seeded random init) and trains the whole network.
        n_blocks = num_blocks(cfg.student.model.name, **cfg.student.model.kwargs)
        init = InitConfig(source=str(study.run_dir("fitnet-stage1", seed)), blocks=n_blocks)
        acc["fitnet"].append(study.run("fitnet", RunSpec(**student, method=kd, init=init), seed,
                                       seed_key="student")["test_acc"])

    seed0 = cfg.seeds[0]
    t_model = load_model(study.run_dir("teacher", seed0))
    s_model = load_model(study.run_dir("student", seed0))
    shape = _shape(study, seed0)
    # Latency is measured once and stored: re-reading a finished study must not change its table.
    stored = study.out / "costs.json"
    key = [cfg.teacher.model.model_dump(), cfg.student.model.model_dump(), list(shape)]  # what was measured
    try:
        kept = json.loads(stored.read_text()) if stored.is_file() else None
    except (ValueError, UnicodeDecodeError):
        kept = None
    if isinstance(kept, dict) and kept.get("models") == key:
        cost_rows = kept["rows"]
    else:
        _, cost_rows = cost_table(profile_models([("teacher", t_model), ("student", s_model)], shape))
        study.claim_files(["costs.json"])
        stored.write_text(json.dumps({"models": key, "rows": cost_rows}))
    costs = {"teacher": cost_rows[0], "student": cost_rows[1]}
    layers = {"teacher": len(get_blocks(t_model)) + 1, "student": len(get_blocks(s_model)) + 1}
    header = ["algorithm", "model", "# layers", "# params", "# mult-adds", "speed-up", "compression", "test acc (%)"]
    labels = {"teacher": ("Teacher", "teacher"), "student": ("Student alone", "student"),
              "kd": (f"Student + KD (τ={cfg.kd.temperature:g})", "student"),
              "fitnet": (f"FitNet (hint {cfg.hint} → guided {cfg.guided}, then KD)", "student")}
    rows = []
    for key, (label, role) in labels.items():
        c = costs[role]
        name = cfg.teacher.model.name if role == "teacher" else cfg.student.model.name
        rows.append([label, name, str(layers[role]), c[1], c[2], c[5], c[6], fmt_pm(acc[key], 2, 100)])
    lat = f"teacher {costs['teacher'][4]} ms, student {costs['student'][4]} ms (median [IQR])"
    notes = (f"{cfg.data.source} test set, mean ± std over {len(cfg.seeds)} seed(s). Speed-up: CPU latency at batch "
             f"256 relative to the teacher ({lat}, measured once and kept in costs.json); compression: teacher "
             f"params / params; input {shape}. Student init: {cfg.student.model.init or 'the family default'}; the "
             f"three students of a seed start from the same weights and batch order (paired).")

    def diffs(a: str, b: str) -> tuple[float, ...]:
        return tuple(x - y for x, y in zip(acc[a], acc[b], strict=True))

    # Primary (declared before any run): hints help the thin student; secondary: beyond KD alone,
    # and beyond the teacher. Every claim needs a teacher ahead of the student alone (validation).
    pre = (val_lead(summaries["teacher"], summaries["student"], cfg.teacher_lead, "teacher − student alone"),
           converged([study.run_dir("teacher", s) for s in cfg.seeds], "teacher"))
    comparisons = [Comparison("FitNet − student alone", diffs("fitnet", "student"), +1, primary=True,
                              preconditions=pre),
                   Comparison("FitNet − student + KD", diffs("fitnet", "kd"), +1, preconditions=pre),
                   Comparison("FitNet − teacher (the paper's FitNets beat their teacher)", diffs("fitnet", "teacher"),
                              +1, preconditions=pre)]
    return study.write_table("results", "FitNets (Romero et al. 2015), with Table 5's cost columns",
                             header, rows, notes, comparisons)


def _shape(study: Study, seed: int) -> tuple[int, int, int]:
    from distillab.engine.checkpoint import read_model_spec

    _, spec = read_model_spec(study.run_dir("teacher", seed))
    return (spec["in_chans"], spec["img_size"], spec["img_size"])
