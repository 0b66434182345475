"""Recipe ``layer-transfer``: Yosinski et al. 2014, "How transferable are features in deep
neural networks?" (docs/studies/layer-transfer.md).

Split the classes into A and B; train baseA and baseB; for each n, build transfer nets whose
first n blocks come from baseB (BnB, "selffer") or baseA (AnB), frozen or fine-tuned (+), plus
the control with n random frozen blocks; report top-1 on B's test set against n.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distillab.config import ClassSplitConfig, DataConfig, ModelConfig, Strict, TrainConfig, Seeds
from distillab.engine.run import RunSpec
from distillab.errors import UserError
from distillab.models import num_blocks
from distillab.recipes.preconditions import converged
from distillab.recipes.registry import register_recipe
from distillab.recipes.study import Study
from distillab.results.plots import line_plot
from distillab.results.stats import Comparison, fmt_interval, fmt_pm
from distillab.transfer import InitConfig

Variant = Literal["BnB", "BnB+", "AnB", "AnB+", "random"]
# variant → (base it copies from, frozen?)
VARIANTS: dict[str, tuple[str | None, bool]] = {
    "BnB": ("B", True), "BnB+": ("B", False), "AnB": ("A", True), "AnB+": ("A", False), "random": (None, True),
}


class Split(Strict):
    split: Literal["random", "semantic", "explicit"] = "random"
    seed: int = 0
    a: list[str | int] | None = None


class LayerTransferRecipe(Strict):
    recipe: Literal["layer-transfer"] = "layer-transfer"
    data: DataConfig = DataConfig()
    split: Split = Split()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    ns: list[int] | None = Field(None, description="block counts to transfer; default 1..L, L = every "
                                                   "transferable block below the head")
    variants: list[Variant] = Field(default_factory=lambda: list(VARIANTS))
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)


def _check(cfg: LayerTransferRecipe) -> list[int]:
    total = num_blocks(cfg.model.name, **cfg.model.kwargs)
    ns = cfg.ns if cfg.ns is not None else list(range(1, total + 1))
    bad = [n for n in ns if not 1 <= n <= total]
    if bad:
        raise UserError(f"ns: {bad[0]} out of range: {cfg.model.name} has {total} transferable blocks below its "
                        f"head, so n must be in 1..{total}")
    return ns


@register_recipe(LayerTransferRecipe)
def run(cfg: LayerTransferRecipe, out: Path, study: Study) -> str:
    ns = _check(cfg)
    half = {p: cfg.data.model_copy(update={"classes": ClassSplitConfig(part=p, **cfg.split.model_dump())})
            for p in ("A", "B")}

    def spec(part: str, init: InitConfig | None = None) -> RunSpec:
        return RunSpec(data=half[part], model=cfg.model, train=cfg.train, init=init)

    acc: dict[str, dict[int, list[float]]] = {v: {n: [] for n in ns} for v in cfg.variants}
    base_b: list[float] = []
    base_a: list[float] = []
    for seed in cfg.seeds:
        base_a.append(study.run("baseA", spec("A"), seed)["test_acc"])
        base_b.append(study.run("baseB", spec("B"), seed)["test_acc"])
        for n in ns:
            for v in cfg.variants:
                source, frozen = VARIANTS[v]
                src = str(study.run_dir(f"base{source}", seed)) if source else None
                s = study.run(f"n{n}/{v}", spec("B", InitConfig(source=src, blocks=n, freeze=frozen)), seed)
                acc[v][n].append(s["test_acc"])

    header = ["n", *cfg.variants]
    rows = [[str(n), *(fmt_pm(acc[v][n], 3) for v in cfg.variants)] for n in ns]
    rows.append(["base B", *(fmt_pm(base_b, 3) for _ in cfg.variants)])

    def minus_base(values: list[float]) -> tuple[float, ...]:
        return tuple(a - b for a, b in zip(values, base_b, strict=True))

    # Every transfer net minus base B on the same seed (same B data), with its interval.
    rows += [
        [f"Δ vs base B (pts, 95% CI), n={n}", *(fmt_interval(minus_base(acc[v][n])) for v in cfg.variants)] for n in ns
    ]
    # Every claim is about base B's level: a base B that has not converged would make any transfer
    # net look good or bad for the wrong reason (validation curves).
    pre = (converged([study.run_dir("baseB", s) for s in cfg.seeds], "base B"),
           converged([study.run_dir("baseA", s) for s in cfg.seeds], "base A"))
    comparisons = [dataclasses.replace(c, preconditions=pre) for c in _claims(cfg, ns, acc, minus_base)]
    study.claim_files(["layer_transfer.png", "layer_transfer.svg"])  # never over a file of the user's
    plot = line_plot(out / "layer_transfer", f"Layer transfer on {cfg.data.source} ({cfg.split.split} split)",
                     "layer n at which the network is chopped and retrained", "top-1 accuracy on B (test)",
                     ns, {v: [acc[v][n] for n in ns] for v in cfg.variants}, {"baseB": base_b}, xticks=ns)
    notes = (f"Top-1 accuracy on B's test set, mean ± std over {len(cfg.seeds)} seed(s); model {cfg.model.name}; "
             f"baseA on A: {fmt_pm(base_a, 3)}. Plot: {plot[0].name}, {plot[1].name}.")
    return study.write_table("results", f"Yosinski et al. 2014: transfer of the first n blocks "
                             f"({cfg.split.split} split)", header, rows, notes, comparisons)


def _claims(cfg: LayerTransferRecipe, ns: list[int], acc: dict[str, dict[int, list[float]]],
            minus_base: Any) -> list[Comparison]:
    """The paper's findings as paired comparisons against base B (fixed before seeing results):
    AnB falls at the top (specificity; the primary claim), BnB dips in the middle (fragile co-adaptation, n = 3..5
    averaged per seed), AnB+ ends above base (the lasting boost, averaged over every n), and random
    frozen layers collapse at the top."""
    top, out = max(ns), []

    def mean_over(v: str, which: list[int]) -> list[float]:
        return [sum(acc[v][n][i] for n in which) / len(which) for i in range(len(acc[v][which[0]]))]

    middle = [n for n in (3, 4, 5) if n in ns]
    if "AnB" in acc:
        out.append(Comparison(f"AnB (n={top}) − base B", minus_base(acc["AnB"][top]), -1, primary=True))
    if "BnB" in acc and middle:
        out.append(Comparison(f"BnB (mean of n={min(middle)}..{max(middle)}) − base B",
                              minus_base(mean_over("BnB", middle)), -1))
    if "AnB+" in acc:
        out.append(Comparison("AnB+ (mean over n) − base B", minus_base(mean_over("AnB+", ns)), +1))
    if "random" in acc:
        out.append(Comparison(f"random (n={top}) − base B", minus_base(acc["random"][top]), -1))
    return out
