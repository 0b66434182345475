"""Recipe ``bit``: Big Transfer (Kolesnikov et al. 2020), upstream pre-training then downstream
fine-tuning by the BiT-HyperRule on 1, 5, 10, … examples per class (docs/methods.md section 3).

Per seed: pre-train the GN+WS ResNet-v2 (and its BatchNorm twin) on the upstream task; on the
downstream task, for each shot count, fine-tune from upstream and train from scratch with the
schedule, lr and MixUp the HyperRule picks for that dataset size, at the downstream batch size
(small batches are where GN+WS and BatchNorm part ways). Table: rows = model/upstream, columns =
shots; plot: accuracy vs shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from distillab import bit_hyperrule
from distillab.config import DataConfig, ModelConfig, Strict, TrainConfig
from distillab.data import prepare_data
from distillab.engine.run import RunSpec
from distillab.errors import UserError
from distillab.methods.supervised import SupervisedConfig
from distillab.models import num_blocks
from distillab.recipes.study import Study
from distillab.results.plots import line_plot
from distillab.results.stats import fmt_pm
from distillab.transfer import InitConfig


class Upstream(Strict):
    data: DataConfig
    train: TrainConfig = TrainConfig()


class HyperRule(Strict):
    schedule_scale: float = Field(1.0, gt=0, description="fraction of the rule's step budget (CPU-scale studies)")
    resolution: Literal["hyperrule", "native"] = Field(
        "hyperrule", description="hyperrule: resize 160 / crop 128 (or 512 / 480); native: keep the image size")


class BiTRecipe(Strict):
    recipe: Literal["bit"] = "bit"
    upstream: Upstream
    downstream: DataConfig
    model: ModelConfig = Field(description="a bit:R..x.. model; its BatchNorm twin is the same with norm=bn")
    shots: list[int | Literal["all"]] = Field(default_factory=lambda: [1, 5, 10, "all"], min_length=1)
    hyperrule: HyperRule = HyperRule()
    bn_twin: bool = Field(True, description="also fine-tune the BatchNorm twin from its own upstream run")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)


def _variants(cfg: BiTRecipe) -> dict[str, ModelConfig]:
    if not cfg.model.name.startswith("bit:"):
        raise UserError(f"model.name: the bit recipe needs a bit:R<depth>x<width> model, not {cfg.model.name!r}")
    out = {"GN+WS": cfg.model}
    if cfg.bn_twin:
        out["BN"] = cfg.model.model_copy(update={"kwargs": {**cfg.model.kwargs, "norm": "bn"}})
    return out


def count_runs(cfg: BiTRecipe) -> int:
    return len(cfg.seeds) * (len(_variants(cfg)) * (1 + len(cfg.shots)) + len(cfg.shots))


def _downstream(cfg: BiTRecipe, shots: int | str, seed: int) -> tuple[DataConfig, TrainConfig, SupervisedConfig]:
    """Data, schedule and objective that the HyperRule picks for this many shots."""
    data = cfg.downstream.model_copy(update={"shots": None if shots == "all" else shots})
    bundle = prepare_data(data, seed)  # in memory: cheap, and gives the true dataset size
    n = len(bundle.train.y)
    aug = data.augment
    if cfg.hyperrule.resolution == "hyperrule":
        resize, crop = bit_hyperrule.get_resolution(*bundle.shape[1:])
        data = data.model_copy(update={"resize": resize})
        aug = aug.model_copy(update={"crop": crop})
    batch = min(data.batch_size, n)
    data = data.model_copy(update={"batch_size": batch, "augment": aug})
    train = bit_hyperrule.train_config(n, batch, cfg.hyperrule.schedule_scale)
    return data, train, SupervisedConfig(mixup_alpha=bit_hyperrule.get_mixup(n))


def run(cfg: BiTRecipe, out: Path, study: Study) -> str:
    variants = _variants(cfg)
    labels = [f"{v}, upstream: source" for v in variants] + ["GN+WS, upstream: none"]
    acc: dict[str, dict[str, list[float]]] = {lab: {str(s): [] for s in cfg.shots} for lab in labels}
    for seed in cfg.seeds:
        for v, model in variants.items():
            up = RunSpec(data=cfg.upstream.data, model=model, train=cfg.upstream.train)
            study.run(f"upstream-{v}", up, seed)
        for shots in cfg.shots:
            data, train, method = _downstream(cfg, shots, seed)
            for v, model in variants.items():
                n_blocks = num_blocks(model.name, **model.kwargs)
                init = InitConfig(source=str(study.run_dir(f"upstream-{v}", seed)), blocks=n_blocks)
                s = study.run(f"{v}-source/{shots}-shot", RunSpec(data=data, model=model, train=train, method=method,
                                                                  init=init), seed)
                acc[f"{v}, upstream: source"][str(shots)].append(s["test_acc"])
            s = study.run(f"GN+WS-none/{shots}-shot", RunSpec(data=data, model=cfg.model, train=train, method=method),
                          seed)
            acc["GN+WS, upstream: none"][str(shots)].append(s["test_acc"])

    cols = [str(s) for s in cfg.shots]
    header = ["model, upstream", *(f"{c}-shot" if c != "all" else "all" for c in cols)]
    rows = [[lab, *(fmt_pm(acc[lab][c], 2, 100) for c in cols)] for lab in labels]
    xs = list(range(len(cols)))
    plot = line_plot(out / "shots", "BiT: downstream accuracy vs examples per class", "examples per class",
                     "top-1 test accuracy", xs, {lab: [acc[lab][c] for c in cols] for lab in labels},
                     xticks=xs, xticklabels=cols)
    notes = (f"Downstream {cfg.downstream.source} (batch {cfg.downstream.batch_size}), upstream "
             f"{cfg.upstream.data.source}; model {cfg.model.name} {cfg.model.kwargs}; BiT-HyperRule schedule × "
             f"{cfg.hyperrule.schedule_scale}, resolution {cfg.hyperrule.resolution}; top-1 (%) mean ± std over "
             f"{len(cfg.seeds)} seed(s). Plot: {plot[0].name}.")
    return study.write_table("results", "Big Transfer: upstream pre-training vs none, by shots", header, rows, notes)
