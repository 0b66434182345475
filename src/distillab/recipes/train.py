"""Recipe ``train``: one model, one objective, over seeds (the building block of every study)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from distillab.config import Seeds
from distillab.engine.run import RunSpec
from distillab.profile import human
from distillab.recipes.registry import register_recipe
from distillab.recipes.study import Study
from distillab.results.stats import fmt_pm


class TrainRecipe(RunSpec):
    recipe: Literal["train"] = "train"
    name: str = Field("run", description="folder name of the runs inside the output directory")
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        from distillab.engine.owned import safe_name
        from distillab.errors import UserError

        try:
            return safe_name(v, "run name")
        except UserError as e:  # pydantic reports ValueErrors with the key's path
            raise ValueError(str(e)) from None


@register_recipe(TrainRecipe)
def run(cfg: TrainRecipe, out: Path, study: Study) -> str:
    spec = RunSpec.model_validate(cfg.model_dump(include=set(RunSpec.model_fields)))
    runs = [study.run(cfg.name, spec, s) for s in cfg.seeds]
    header = ["run", "model", "method", "# params", "seeds", "test acc (%)", "test errors"]
    rows = [[cfg.name, cfg.model.name, cfg.method.name, human(runs[0]["params"]), str(len(runs)),
             fmt_pm([r["test_acc"] for r in runs], 2, 100), fmt_pm([r["test_errors"] for r in runs], 1)]]
    return study.write_table("results", f"{cfg.name} on {cfg.data.source}", header, rows)
