"""Equal-effort tuning: a validation grid any study can put in front of its seeds.

Each arm of a comparison (a method and its baseline) gets the same number of trials — a grid of
values for dotted keys of its run spec (``method.beta``, ``train.optim.lr``, ``method.temperature``
…) — trained at a pilot seed that is not one of the table's seeds, scored on *validation*
accuracy only, and the best point is what the table's seeds then run. The trials are ordinary runs
of the study (``tune/<arm>/t<i>``), so they resume, and ``--executor ray`` fans them out. Test
accuracy never enters a choice. Keys are a run spec's: ``method.weight`` is AT's β, for example.
"""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import Field, ValidationError, field_validator

from distillab.config import Strict
from distillab.engine.run import RunSpec
from distillab.errors import UserError
from distillab.results.stats import markdown_table


class TuneConfig(Strict):
    """``grid``: arm label → {dotted run-spec key: values}. Every arm must have the same number of
    grid points (equal effort); an arm not listed runs its config as given (the tuning table lists
    the tuned arms only)."""

    seed: int = Field(100, description="pilot seed (keep it out of the table's seeds)")
    grid: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _equal_effort(cls, v: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        sizes = {arm: grid_size(g) for arm, g in v.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError("every arm needs the same number of trials (equal effort): "
                             + ", ".join(f"{a}: {n}" for a, n in sizes.items()))
        for arm, g in v.items():
            for key, values in g.items():
                if not values:
                    raise ValueError(f"{arm}.{key}: no values")
        return v


def grid_size(grid: dict[str, list[Any]]) -> int:
    """Number of points (trials) of one arm's grid."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def with_overrides(spec: RunSpec, values: dict[str, Any], where: str) -> RunSpec:
    """``spec`` with dotted keys set (validated as a whole, so a key that does not exist or a
    value of the wrong type is a one-line error naming ``where``)."""
    data = spec.model_dump()
    for dotted, value in values.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise UserError(f"{where}: {dotted}: no such key in the run spec")
            node = node[p]
        if last not in node:
            raise UserError(f"{where}: {dotted}: no such key in the run spec")
        node[last] = value
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def check_grid(cfg: TuneConfig, table_seeds: list[int], specs: dict[str, RunSpec], known: str) -> None:
    """A recipe's config-time check of its ``tune`` section, so a bad grid fails before any run (not
    after the pilot teacher): every arm is one of ``specs`` (``known`` names them in the error), the
    pilot seed is not a table seed, and every grid value is a valid override of its arm's spec.
    Raises ValueError (pydantic reports it with the key's path)."""
    unknown = set(cfg.grid) - set(specs)
    if unknown:
        raise ValueError(f"tune.grid: {sorted(unknown)[0]!r} is neither {known}")
    if cfg.grid and cfg.seed in table_seeds:
        raise ValueError("tune.seed: the pilot seed must not be one of the table's seeds")
    for arm, grid in cfg.grid.items():
        for key, values in grid.items():
            for value in values:
                try:
                    with_overrides(specs[arm], {key: value}, f"tune.grid.{arm}")
                except UserError as e:
                    raise ValueError(str(e)) from None


def tune(study: Any, cfg: TuneConfig, specs: dict[str, RunSpec],
         seed_key: str) -> tuple[dict[str, RunSpec], list[list[str]]]:
    """The specs the table's seeds should run: for each arm with a grid, its point with the best
    validation accuracy at the pilot seed (the others unchanged). Every arm's trials are asked for
    before any choice, so an executor can train them all at once; trials of every arm share
    ``seed_key`` (same init and batch order per point: common random numbers). Also returns rows
    (arm, point, val acc, chosen) for the study's tuning table."""
    trials: dict[str, list[tuple[dict, RunSpec, dict[str, Any]]]] = {}
    for arm, spec in specs.items():
        grid = cfg.grid.get(arm)
        if not grid:
            continue
        if not spec.data.val_size:
            raise UserError(f"tune.grid.{arm}: tuning chooses on validation accuracy; set data.val_size > 0")
        keys = list(grid)
        for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
            point = dict(zip(keys, combo, strict=True))
            trial = with_overrides(spec, point, f"tune.grid.{arm}")
            summary = study.run(f"tune/{arm}/t{i}", trial, cfg.seed, seed_key=f"tune/{seed_key}")
            trials.setdefault(arm, []).append((summary, trial, point))
    study.await_results([s for arm in trials for s, _, _ in trials[arm]])
    chosen, rows = dict(specs), []
    for arm, scored in trials.items():
        # Validation accuracy only; ties go to the first point listed.
        best = max(range(len(scored)), key=lambda i: (scored[i][0].get("val_acc") or 0.0, -i))
        chosen[arm] = scored[best][1]
        rows += [[arm, ", ".join(f"{k}={v}" for k, v in point.items()), f"{100 * (s.get('val_acc') or 0.0):.2f}",
                  "✓" if i == best else ""] for i, (s, _, point) in enumerate(scored)]
    return chosen, rows


def tuning_table(rows: list[list[str]], cfg: TuneConfig) -> str:
    """The grid, each point's validation accuracy and the choice, as Markdown ('' when untuned)."""
    if not rows:
        return ""
    return (f"Tuning on validation (pilot seed {cfg.seed}, not a table seed; the same number of trials per "
            f"tuned arm):\n\n" + markdown_table(["arm", "point", "val acc (%)", "chosen"], rows))
