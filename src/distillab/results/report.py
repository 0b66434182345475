"""``distillab report RUNS_DIR``: every finished run under a folder, grouped by configuration
(the run's config without its seed and input locations, per role), mean ± std over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distillab.engine.run_folder import CONFIG_FILE, SEED_KEYS, SUMMARY_FILE, with_defaults, without_locations
from distillab.errors import UserError
from distillab.profile import human
from distillab.results.stats import fmt_pm


def collect(root: Path) -> list[dict]:
    """One dict per configuration: name, summaries of its seeds."""
    if not root.is_dir():
        raise UserError(f"runs directory not found: {root}")
    groups: dict[str, dict] = {}
    for summ in sorted(root.rglob(SUMMARY_FILE)):
        run_dir = summ.parent
        cfg = run_dir / CONFIG_FILE
        if not cfg.is_file():
            continue
        try:
            config = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
            raise UserError(f"{cfg} is corrupt; delete {run_dir} to retrain that run") from None
        if not isinstance(config, dict):
            raise UserError(f"{cfg} is corrupt; delete {run_dir} to retrain that run")
        # One row per role of a study: the seed and where inputs live (each seed's distilled run
        # names its own seed's teacher folder) are not part of what the row compares.
        for k in SEED_KEYS:
            config.pop(k, None)
        role = (
            str(run_dir.parent.relative_to(root)) if run_dir.name.startswith("seed") else str(run_dir.relative_to(root))
        )
        key = role + "\n" + json.dumps(without_locations(with_defaults(config)), sort_keys=True, default=str)
        try:
            s = json.loads(summ.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            s = None
        if not isinstance(s, dict) or not all(isinstance(s.get(k), (int, float)) for k in
                                               ("test_acc", "test_errors", "params", "macs")) or not all(
                isinstance(s.get(k), str) for k in ("model", "method")):
            raise UserError(
                f"run summary {summ} is corrupt (needs numeric test_acc, test_errors, params, macs and a model "
                "and method name); "
                f"delete {run_dir} to retrain that run"
            )
        name = (
            str(run_dir.parent.relative_to(root)) if run_dir.name.startswith("seed") else str(run_dir.relative_to(root))
        )
        groups.setdefault(key, {"name": name, "runs": []})["runs"].append(s)
    if not groups:
        raise UserError(f"no finished runs (summary.json) under {root}")
    return list(groups.values())


def report_rows(root: Path) -> tuple[list[str], list[list[str]]]:
    header = ["run", "model", "method", "# params", "# mult-adds", "seeds", "test acc (%)", "test errors"]
    rows = []
    for g in collect(root):
        r = g["runs"]

        def metric(key: str) -> list[float]:
            # a run the watchdog found collapsed (summary "warning") is left out of the mean, as in a study
            return [float("nan") if x.get("warning") else x[key] for x in r]

        rows.append([g["name"], r[0]["model"], r[0]["method"], human(r[0]["params"]), human(r[0]["macs"]),
                     str(len(r)), fmt_pm(metric("test_acc"), 2, 100), fmt_pm(metric("test_errors"), 1)])
    return header, rows
