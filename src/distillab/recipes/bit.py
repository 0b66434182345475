"""Recipe ``bit``: Big Transfer (Kolesnikov et al. 2020), upstream pre-training then downstream
fine-tuning by the BiT-HyperRule on 1, 5, 10, … examples per class (docs/studies/bit.md).

Per seed: pre-train the GN+WS ResNet-v2 (and its BatchNorm twin) on the upstream task; on the
downstream task, for each shot count, fine-tune from upstream and train from scratch with the
step budget, lr and MixUp the HyperRule picks for that dataset size, at the downstream batch size
(small batches are where GN+WS and BatchNorm part ways). Equal effort: the pre-trained GN+WS arm
and the from-scratch baseline each run the same grid of lrs and lengths (``tuning``) besides the
rule's own point, and each keeps its point best on validation. Table: rows = model/upstream,
columns = shots; plot: accuracy vs shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from distillab import bit_hyperrule
from distillab.config import DataConfig, ModelConfig, Strict, TrainConfig, Seeds
from distillab.data import prepare_data
from distillab.engine.run import RunSpec
from distillab.errors import UserError
from distillab.methods.supervised import SupervisedConfig
from distillab.models import num_blocks
from distillab.recipes.registry import register_recipe
from distillab.recipes.study import Study
from distillab.results.plots import line_plot
from distillab.results.stats import Comparison, fmt_pm
from distillab.transfer import InitConfig


class Upstream(Strict):
    data: DataConfig
    train: TrainConfig = TrainConfig()


class HyperRule(Strict):
    schedule_scale: float = Field(1.0, gt=0, description="fraction of the rule's step budget (CPU-scale studies)")
    resolution: Literal["hyperrule", "native"] = Field(
        "hyperrule", description="hyperrule: resize 160 / crop 128 (or 512 / 480), evaluate on the whole image "
                                 "resized to the crop size; native: keep the image size")
    base_lr: float = Field(bit_hyperrule.BASE_LR, gt=0, description="the rule's lr, used at the downstream batch")
    epochs: int = Field(10, ge=1, description="the step budget is split into this many epochs (evaluations)")


class Tuning(Strict):
    """The same grid of lrs and lengths for both arms compared by the primary claims — the
    pre-trained GN+WS model and the from-scratch baseline — each point chosen per shot count on
    validation accuracy (mean over seeds): a tuned method against an equally tuned baseline."""

    lrs: list[float] = Field(default_factory=lambda: [0.003, 0.01, 0.03, 0.1], min_length=1)
    lengths: list[float] = Field(default_factory=lambda: [1.0, 4.0], min_length=1,
                                 description="multiples of the rule's step budget")
    shots: list[int | Literal["all"]] | None = Field(
        None, description="shot counts whose arms are tuned (default: all); the others keep the rule's")


class BiTRecipe(Strict):
    recipe: Literal["bit"] = "bit"
    upstream: Upstream
    downstream: DataConfig
    model: ModelConfig = Field(description="a bit:R..x.. model; its BatchNorm twin is the same with norm=bn")
    shots: list[int | Literal["all"]] = Field(default_factory=lambda: [1, 5, 10, "all"], min_length=1)
    hyperrule: HyperRule = HyperRule()
    tuning: Tuning = Tuning()
    bn_twin: bool = Field(True, description="also fine-tune the BatchNorm twin from its own upstream run")
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)


def _variants(cfg: BiTRecipe) -> dict[str, ModelConfig]:
    if not cfg.model.name.startswith("bit:"):
        raise UserError(f"model.name: the bit recipe needs a bit:R<depth>x<width> model, not {cfg.model.name!r}")
    out = {"GN+WS": cfg.model}
    if cfg.bn_twin:
        out["BN"] = cfg.model.model_copy(update={"kwargs": {**cfg.model.kwargs, "norm": "bn"}})
    return out


def _grid(cfg: BiTRecipe) -> list[tuple[float, float]]:
    """(lr, length) points of each tuned arm other than the rule's own (its rule run)."""
    return [(lr, n) for n in cfg.tuning.lengths for lr in cfg.tuning.lrs
            if (lr, n) != (cfg.hyperrule.base_lr, 1.0)]


def _tuned(cfg: BiTRecipe, shots: int | str) -> bool:
    return cfg.tuning.shots is None or shots in cfg.tuning.shots


def _downstream(cfg: BiTRecipe, shots: int | str, seed: int) -> tuple[DataConfig, TrainConfig, SupervisedConfig]:
    """Data, schedule and objective that the HyperRule picks for this many shots. The batch size is
    the config's whatever the shot count: batches are drawn with repetition from small sets."""
    data = cfg.downstream.model_copy(update={"shots": None if shots == "all" else shots})
    bundle = prepare_data(data, seed)  # in memory: cheap, and gives the true dataset size
    n = bundle.train.num_examples
    aug = data.augment
    if cfg.hyperrule.resolution == "hyperrule":
        resize, crop = bit_hyperrule.get_resolution(*bundle.shape[1:])
        data = data.model_copy(update={"resize": resize, "eval_view": "resize"})
        aug = aug.model_copy(update={"crop": crop})
    train, steps = bit_hyperrule.train_config(n, cfg.hyperrule.schedule_scale, cfg.hyperrule.base_lr,
                                              cfg.hyperrule.epochs)
    data = data.model_copy(update={"augment": aug, "steps_per_epoch": steps})
    return data, train, SupervisedConfig(mixup_alpha=bit_hyperrule.get_mixup(n))


TUNED = {"GN+WS-source": "GN+WS, upstream: source (lr, length tuned on val)",
         "GN+WS-none": "GN+WS, upstream: none (lr, length tuned on val)"}


@register_recipe(BiTRecipe)
def run(cfg: BiTRecipe, out: Path, study: Study) -> str:
    variants = _variants(cfg)
    labels = [f"{v}, upstream: source (rule)" for v in variants] + ["GN+WS, upstream: none (rule)"]
    acc: dict[str, dict[str, list[float]]] = {lab: {str(s): [] for s in cfg.shots} for lab in labels}
    # arm -> grid point -> shots -> per-seed (val acc, test acc); the rule's own run is a point
    grid: dict[str, dict[tuple[float, float], dict[str, list[tuple[float, float]]]]] = {a: {} for a in TUNED}
    steps: dict[str, int] = {}  # the rule's step budget per shot count (for the notes)
    for seed in cfg.seeds:
        for v, model in variants.items():
            up = RunSpec(data=cfg.upstream.data, model=model, train=cfg.upstream.train)
            study.run(f"upstream-{v}", up, seed)
        for shots in cfg.shots:
            data, train, method = _downstream(cfg, shots, seed)
            steps[str(shots)] = train.epochs * (data.steps_per_epoch or 0)
            key = f"{shots}-shot"  # every downstream run of a shot count: same head init and batch order
            arms: dict[str, RunSpec] = {}
            for v, model in variants.items():
                n_blocks = num_blocks(model.name, **model.kwargs)
                init = InitConfig(source=str(study.run_dir(f"upstream-{v}", seed)), blocks=n_blocks)
                arms[f"{v}-source"] = RunSpec(data=data, model=model, train=train, method=method, init=init)
            arms["GN+WS-none"] = RunSpec(data=data, model=cfg.model, train=train, method=method)
            for arm, spec in arms.items():
                s = study.run(f"{arm}/{shots}-shot", spec, seed, seed_key=key)
                acc[f"{arm.split('-')[0]}, upstream: {arm.split('-', 1)[1]} (rule)"][str(shots)].append(s["test_acc"])
                if arm not in TUNED:
                    continue
                grid[arm].setdefault((cfg.hyperrule.base_lr, 1.0), {}).setdefault(str(shots), []).append(
                    (s["val_acc"], s["test_acc"]))
                # Equal effort: both tuned arms run the same points, at the same seeds.
                for lr, length in _grid(cfg) if _tuned(cfg, shots) else []:
                    t = train.model_copy(update={"epochs": max(1, round(train.epochs * length)),
                                                 "optim": train.optim.model_copy(update={"lr": lr})})
                    s = study.run(f"{arm}/{shots}-shot/lr{lr:g}-x{length:g}", spec.model_copy(update={"train": t}),
                                  seed, seed_key=key)
                    grid[arm].setdefault((lr, length), {}).setdefault(str(shots), []).append(
                        (s["val_acc"], s["test_acc"]))

    cols = [str(s) for s in cfg.shots]
    chosen: dict[str, dict[str, tuple[float, float]]] = {a: {} for a in TUNED}
    for arm, label in TUNED.items():
        acc[label] = {}
        g = grid[arm]
        for c in cols:
            # Chosen on validation accuracy only (mean over seeds); its test accuracy is reported.
            chosen[arm][c] = max((p for p in g if c in g[p]), key=lambda p: sum(v for v, _ in g[p][c]) / len(g[p][c]))
            acc[label][c] = [t for _, t in g[chosen[arm][c]][c]]
        labels.append(label)
    header = ["model, upstream", *(f"{c}-shot" if c != "all" else "all" for c in cols)]
    rows = [[lab, *(fmt_pm(acc[lab][c], 2, 100) for c in cols)] for lab in labels]
    for arm in TUNED:
        rows.append([f"{arm}: lr, length chosen", *(f"{chosen[arm][c][0]:g}, {chosen[arm][c][1]:g}x" for c in cols)])
    xs = list(range(len(cols)))
    study.claim_files(["shots.png", "shots.svg"])  # never over a file of the user's
    plot = line_plot(out / "shots", "BiT: downstream accuracy vs examples per class", "examples per class",
                     "top-1 test accuracy", xs, {lab: [acc[lab][c] for c in cols] for lab in labels},
                     xticks=xs, xticklabels=cols)

    def diff(a: str, b: str, c: str) -> tuple[float, ...]:
        return tuple(x - y for x, y in zip(acc[a][c], acc[b][c], strict=True))

    # The paper: upstream pre-training beats training from scratch, most with few examples (the
    # primary claim: the fewest shots); GN+WS fine-tunes better than BatchNorm at small batches.
    fewest = min(cols, key=lambda c: float("inf") if c == "all" else int(c))
    comparisons = [Comparison(f"source − none (both tuned), {c}{'-shot' if c != 'all' else ''}",
                              diff(TUNED["GN+WS-source"], TUNED["GN+WS-none"], c), +1, primary=c == fewest)
                   for c in cols]
    if "BN" in variants:
        comparisons += [Comparison(f"GN+WS − BN (both from source, rule), {c}-shot",
                                   diff("GN+WS, upstream: source (rule)", "BN, upstream: source (rule)", c), +1)
                        for c in cols if c != "all"]
    notes = (f"Downstream {cfg.downstream.source} (batch {cfg.downstream.batch_size}, kept for every shot count by "
             f"drawing batches from repeated shuffles), upstream {cfg.upstream.data.source}; model {cfg.model.name} "
             f"{cfg.model.kwargs}; BiT-HyperRule: lr {cfg.hyperrule.base_lr:g}, steps "
             f"{', '.join(f'{c}: {n}' for c, n in steps.items())} (schedule × {cfg.hyperrule.schedule_scale}), "
             f"resolution {cfg.hyperrule.resolution}; inputs normalised with the source's fixed statistics, stored "
             f"with each model. Equal-effort grid for both the pre-trained and the from-scratch GN+WS arm: the rule's "
             f"point plus lr {cfg.tuning.lrs} × length {cfg.tuning.lengths} of the rule's steps"
             f"{'' if cfg.tuning.shots is None else f' for shots {cfg.tuning.shots}'}, each arm's point chosen on "
             f"validation. Top-1 (%) mean ± std over {len(cfg.seeds)} seed(s). "
             f"Plot: {plot[0].name}.")
    return study.write_table("results", "Big Transfer: upstream pre-training vs none, by shots", header, rows, notes,
                             comparisons)
