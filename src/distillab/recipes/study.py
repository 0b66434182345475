"""What every recipe uses: a place for its runs, a progress display, and result files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from distillab.config import DataConfig, ModelConfig, Strict, TrainConfig
from distillab.data import prepare_data
from distillab.engine.checkpoint import load_model
from distillab.engine.progress import make_progress
from distillab.engine.owned import (  # noqa: F401 - the study-folder checks, re-exported
    check_can_write, check_study_folder, claim_study_folder, owned_files, write_marker)
from distillab.engine.run import RunSpec, derive_seed, execute_run
from distillab.engine.run_folder import is_finished
from distillab.engine.trainer import choose_device, evaluate
from distillab.methods.base import Teacher
from distillab.results.stats import COMPARISON_HEADER, GOOD, Comparison, assess, csv_table, headline, markdown_table


VERDICT_NOTE = (
    "p: paired t-test over seeds (for a claim of no difference, the two one-sided equivalence tests "
    "against the margin). The primary claim, declared before any run, is tested alone at 0.05; the "
    "secondary claims are Holm-adjusted together (Holm p). Verdict: 'reproduced' / 'not reproduced' "
    "when the (adjusted) p < 0.05 in / against the paper's direction; 'consistent' when the "
    "equivalence test passes; 'not testable here' when a precondition measured on validation fails; "
    "else 'inconclusive', with the minimum effect detectable at 80 % power by these seeds (MDE). "
    "See docs/statistics.md.")


class Role(Strict):
    """A model and its training schedule: one role of a study (teacher, student, …)."""

    model: ModelConfig
    train: TrainConfig = TrainConfig()


STUDY_FILES = ("study.json", "costs.json")  # besides the tables and plots a recipe names
# A collapsed run's test metrics, hidden from a study's tables and claims (validation accuracy stays:
# preconditions and tuning read it, and a collapsed run's is at chance anyway).
COLLAPSE_HIDES = ("test_acc", "test_errors", "test_top5")


class Study:
    """Runs live at ``out/<name>/seed<k>``; a finished run is read back, never retrained."""

    def __init__(self, out: Path, total_runs: int, console: Console | None = None, resume: bool = True,
                 keep_checkpoints: bool = False, quiet: bool = False, provenance: str | None = None,
                 restart: bool = False) -> None:
        self.out = out
        self.restart = restart
        self.provenance = provenance  # study.json text, written with the results
        self.resume = resume
        self.keep_checkpoints = keep_checkpoints
        self.console = console or Console()
        self.progress = make_progress(total_runs, self.console, quiet)
        self.collapsed: list[str] = []  # runs that ended at chance accuracy (summary "warning")
        self.reused = 0  # finished runs read back instead of trained

    def __enter__(self) -> "Study":
        check_study_folder(self.out)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def plan_weights(self, planned: Sequence[Any]) -> None:
        """Weight the study's progress bar by each planned run's estimated work (see
        :func:`run_weights`), so its ETA holds across runs of different lengths."""
        if hasattr(self.progress, "set_weights") and planned:
            self.progress.set_weights(run_weights(planned))

    def run_dir(self, name: str, seed: int) -> Path:
        from distillab.engine.owned import safe_name

        return self.out / safe_name(name, "run name") / f"seed{seed}"

    def run(self, name: str, spec: RunSpec, seed: int, seed_key: str | None = None) -> dict[str, Any]:
        """Train (or resume / read back) the run ``name`` for ``seed``; return its summary.

        The run's own seed is derived from (``seed``, ``seed_key`` or ``name``): runs never share an
        initialisation or a data order unless a recipe passes one ``seed_key`` on purpose (a paired
        comparison: the same student trained alone and distilled)."""
        label = f"{name} seed {seed}"
        if is_finished(self.run_dir(name, seed)):
            self.reused += 1
            if hasattr(self.progress, "skip_run"):
                self.progress.skip_run(label)
        self.progress.begin_run(label)
        summary = execute_run(spec, seed, self.run_dir(name, seed), progress=self.progress, resume=self.resume,
                              keep_checkpoints=self.keep_checkpoints, restart=self.restart,
                              run_seed=derive_seed(seed, seed_key or name), study_dir=self.out)
        self.progress.end_run()
        note = getattr(spec.method, "accuracy_note", "")  # e.g. a stage that never trains the classifier
        self.progress.log(f"{name} seed {seed}: test acc {100 * summary['test_acc']:.2f}% "
                          f"({summary['test_errors']} errors){' — ' + note if note else ''}")
        if summary.get("warning"):
            import re

            # "accuracy 10.0% is at chance (1/10) after 2 epochs" out of the watchdog's line (summary.json)
            found = re.search(r"accuracy ([\d.]+%) is at chance \(1/\d+\) after (\d+ epochs?)", summary["warning"])
            label = f"{name} seed {seed}" + (f" ({found[1]} after {found[2]})" if found else "")
            if label not in self.collapsed:
                self.collapsed.append(label)
            self.progress.log(f"warning: {summary['warning']}")
            # A failed training is not a measurement of the method: its test metrics become NaN for the
            # recipe, so every mean, std and paired interval leaves it out and says so (results/stats.py).
            # summary.json on disk keeps the measured numbers.
            summary = {**summary, **{k: float("nan") for k in COLLAPSE_HIDES if k in summary}, "collapsed": True}
        return summary

    def await_results(self, summaries: list[dict[str, Any]]) -> None:
        """Called by a recipe before a choice that depends on these runs' results (a tuning grid).
        Training runs in order, so the results are here; a planning study stops at this point
        until they are (recipes/plan.py)."""

    def evaluate_ensemble(self, names: Sequence[str], data: DataConfig, seed: int) -> dict[str, Any]:
        """Test metrics of the average of the probabilities of finished runs ``names`` (seed ``seed``)."""
        from distillab.engine.checkpoint import read_model_spec

        device = choose_device()
        norm = read_model_spec(self.run_dir(names[0], seed))[1].get("normalize")  # what the members saw
        bundle = prepare_data(data, seed, device, normalization=norm)
        members = [load_model(self.run_dir(n, seed), num_classes=bundle.num_classes, device=device) for n in names]
        return evaluate(Teacher(members), bundle.test)

    def write_table(self, stem: str, title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                    notes: str = "", comparisons: Sequence[Comparison] = ()) -> str:
        """Save ``<stem>.md`` / ``<stem>.csv`` in the study folder and return the Markdown.

        ``comparisons``: the claims the study tests, as a second table (paired difference, 95 %
        Student-t interval over seeds, verdict; also ``<stem>-comparisons.csv``) under a one-line
        overall verdict."""
        md = f"### {title}\n\n"
        assessed = assess(comparisons)
        if comparisons:
            good = sum(a.verdict in GOOD for a in assessed)
            primary = next((c.label for c in comparisons if c.primary), None)
            what = f"primary claim: {primary}; " if primary else ""
            short = sum(c.collapsed > 0 for c in comparisons)
            lost = f"; {short} claim(s) tested on fewer seeds: a run collapsed" if short else ""
            md += (f"**Verdict: {headline(assessed)}** ({what}{good} of {len(comparisons)} claims "
                   f"reproduced or consistent{lost}).\n\n")
        md += f"{markdown_table(header, rows)}\n"
        if self.collapsed:  # a failed training is flagged and left out, not averaged as a method's effect
            notes = (f"**Warning: {len(self.collapsed)} run(s) ended at chance accuracy (training collapsed, not a "
                     f"method effect): {'; '.join(self.collapsed)}.** They are left out of every mean, ± and "
                     f"paired interval above (marked \"collapsed\"); rerun them with a lower lr or "
                     f"train.optim.grad_clip (delete their folders first, or use another --out).\n\n" + notes)
        if notes:
            md += f"\n{notes}\n"
        comp_rows = [a.row() for a in assessed]
        if comparisons:
            md += f"\n{markdown_table(COMPARISON_HEADER, comp_rows)}\n\n{VERDICT_NOTE}\n"
        from distillab.distributed import current

        if not current().is_main:  # under torchrun only rank 0 writes
            return md
        files = {f"{stem}.md": md, f"{stem}.csv": csv_table(header, rows)}
        if comparisons:
            files[f"{stem}-comparisons.csv"] = csv_table(COMPARISON_HEADER, comp_rows)
        if self.provenance:
            files["study.json"] = self.provenance
        self.claim_files(files)
        for name, text in files.items():
            (self.out / name).write_text(text)
        return md

    def claim_files(self, names: Sequence[str] | dict[str, Any]) -> None:
        """Before writing files into the study folder: refuse (one line) if one exists that distillab
        did not write, else record them in the folder's marker."""
        claim_study_folder(self.out)
        check_can_write(self.out, names, "study", "choose another --out")
        mine = owned_files(self.out, "study")
        if not set(names) <= mine:
            write_marker(self.out, "study", mine | set(names))


# Input shape of the built-in sources (channels, side); others: 3 channels at data.image_size or 32.
_SHAPES = {"fashion-mnist": (1, 28), "mnist": (1, 28), "digits": (1, 8), "cifar10": (3, 32), "cifar100": (3, 32)}


def run_weights(planned: Sequence[Any]) -> dict[str, float]:
    """Estimated work of each planned run: epochs x training examples x (the student's multiply-adds
    per example + a third of each teacher's that runs live — its forward pass alone; none from a
    soft-label cache). Mult-adds, not parameters: a conv net has few parameters but many mult-adds
    (the demo's CNN teacher has a quarter of its MLP student's parameters and 23x its mult-adds, and
    a parameter count made its run 2 % of the estimate for 58 % of the time). Counted on the meta
    device (no memory, no compute); only the ratios matter, since the bar's speed is measured."""
    import torch

    from distillab.models import create_model
    from distillab.profile import count_macs

    sizes: dict[tuple[str, str, tuple[int, int]], int] = {}

    def macs(model: Any, data: Any) -> int:
        channels, side = _SHAPES.get(str(data.source), (getattr(data, "channels", None) or 3, data.image_size or 32))
        side = data.resize or side
        key = (model.name, repr(sorted(model.kwargs.items())), (channels, side))
        if key not in sizes:
            try:
                with torch.device("meta"):
                    kwargs = {k: v for k, v in model.kwargs.items() if k != "checkpoint"}
                    net = create_model(model.name, 10, channels, side, **kwargs)
                    sizes[key] = count_macs(net, (channels, side, side))
            except Exception:  # noqa: BLE001 - an estimate: an unbuildable model counts as average
                sizes[key] = 0
        return sizes[key]

    out: dict[str, float] = {}
    for r in planned:
        method = r.spec.method
        live = [] if getattr(method, "cache", None) else list(map(str, getattr(method, "teacher", []) or []))
        cost = macs(r.spec.model, r.spec.data) + sum(
            macs(planned[i].spec.model, planned[i].spec.data) for i in r.after if str(planned[i].run_dir) in live
        ) / 3
        n = r.spec.data.train_subset or r.spec.data.steps_per_epoch or 1
        out[f"{r.name} seed {r.seed}"] = max(cost, 1.0) * r.spec.train.epochs * n
    return out
