"""A study as a graph of runs, and executors that train it.

A recipe is ordinary Python that calls ``study.run(name, spec, seed)`` in an order that respects
its dependencies (baseA before every AnB, a teacher before its students, generation k before
k+1, FitNets stage 1 before stage 2). :func:`plan_study` runs the recipe against a
:class:`PlanningStudy` that records each call instead of training, so the graph is read off the
recipe itself — no second description to keep in sync: a run depends on the runs whose folders
its spec reads (``method.teacher``, ``init.source``).

The ``local`` executor is the recipe itself (one process, in order). :func:`run_on_ray` submits
each planned run as a Ray task as soon as the runs it reads have finished; afterwards the recipe
runs locally once more, reads every finished run back and writes the same tables.

A recipe whose later runs depend on earlier *results* (a validation grid choosing the spec the
table's seeds run) cannot be planned whole before training: planning stops where the recipe
waits for results it does not have yet (:meth:`Study.await_results`), and :func:`run_study_on_ray`
trains that part, plans again with the finished runs' real summaries, and repeats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillab.engine.run import RunSpec, derive_seed, unfinished_run_error
from distillab.engine.run_folder import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_summary
from distillab.errors import UserError
from distillab.recipes.study import Study


@dataclass
class PlannedRun:
    name: str
    seed: int
    run_seed: int
    spec: RunSpec
    run_dir: Path
    after: list[int] = field(default_factory=list)  # positions of the planned runs it reads


class PlanCut(Exception):
    """Raised by a planning study where the recipe needs results that are not there yet."""


class Plan(list):
    """The planned runs, in order; ``complete`` is False when planning stopped at a recipe's wait
    for results (train these, then plan again)."""

    complete: bool = True


class PlanningStudy(Study):
    """Records the runs a recipe asks for instead of training them; answers with placeholder
    summaries so the recipe's control flow carries on. The recipe sees run folders in a scratch
    folder (it may read a run's learning curve between runs); the plan names them in ``out``."""

    def __init__(self, scratch: Path, out: Path, provisional: bool = False) -> None:
        super().__init__(scratch, total_runs=0, quiet=True)
        # provisional: carry on past a wait for results with placeholders (every run is listed, but
        # those chosen from results may be the wrong ones: for counting, not for training)
        self.provisional = provisional
        self.real_out = out
        self.planned: list[PlannedRun] = []

    def _relocate(self, path: str) -> str:
        p = Path(path)
        return str(self.real_out / p.relative_to(self.out)) if p.is_relative_to(self.out) else path

    def await_results(self, summaries: list[dict[str, Any]]) -> None:
        if not self.provisional and any(s.get("_planned") for s in summaries):
            raise PlanCut

    def run(self, name: str, spec: RunSpec, seed: int, seed_key: str | None = None) -> dict[str, Any]:
        scratch_dir = self.run_dir(name, seed)
        scratch_dir.mkdir(parents=True, exist_ok=True)
        (scratch_dir / METRICS_FILE).write_text('{"val_acc": 0.5}\n' * spec.train.epochs)
        teachers = list(getattr(spec.method, "teacher", None) or [])
        reads = set(teachers) | ({spec.init.source} if spec.init is not None and spec.init.source else set())
        update: dict[str, Any] = {}
        if teachers:
            update["method"] = spec.method.model_copy(update={"teacher": [self._relocate(t) for t in teachers]})
        if spec.init is not None and spec.init.source:
            update["init"] = spec.init.model_copy(update={"source": self._relocate(spec.init.source)})
        where = {str(r.run_dir): i for i, r in enumerate(self.planned)}
        real_dir = self.real_out / scratch_dir.relative_to(self.out)
        self.planned.append(PlannedRun(name, seed, derive_seed(seed, seed_key or name), spec.model_copy(update=update),
                                       real_dir, sorted({where[self._relocate(p)] for p in reads
                                                         if self._relocate(p) in where})))
        if (real_dir / SUMMARY_FILE).is_file():  # finished: its real results (a later plan may need them)
            try:
                return read_summary(real_dir)
            except UserError:
                pass
        return {"test_acc": 0.5, "val_acc": 0.5, "test_top5": 1.0, "test_errors": 0, "test_n": 1, "params": 1,
                "macs": 1, "train_seconds": 1.0, "epochs": spec.train.epochs, "device": "cpu", "_planned": True}

    def evaluate_ensemble(self, names: Any, data: Any, seed: int) -> dict[str, Any]:
        return {"acc": 0.5, "top5": 1.0, "errors": 0, "n": 1, "loss": 0.0}

    def write_table(self, *args: Any, **kwargs: Any) -> str:
        return ""


def plan_study(cfg: Any, module: Any, out: Path, provisional: bool = False) -> Plan:
    """Every run the recipe ``module`` (anything with ``run(cfg, out, study)``: a recipe module or
    its registry entry) would train for ``cfg``, in a valid order, with its
    dependencies. What follows the runs (cost columns, ensembles of finished models) needs trained
    models and is skipped here: the recipe's local pass after the executor does it."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        study = PlanningStudy(Path(scratch), out, provisional)
        plan = Plan()
        try:
            module.run(cfg, Path(scratch), study)
        except PlanCut:
            plan.complete = False
        except (UserError, OSError, KeyError, ValueError, ZeroDivisionError, RuntimeError):
            if not study.planned:  # a config the recipe refuses before its first run: say so now
                raise
            # else only reached after the last study.run: tables and cost columns need trained models
    plan.extend(study.planned)
    return plan


def count_runs(cfg: Any, recipe: Any) -> int:
    """How many runs the study ``recipe`` trains for ``cfg``, read off its plan (every run, those a
    tuning grid would choose included): no hand-written count to keep in sync with the recipe."""
    import tempfile

    with tempfile.TemporaryDirectory() as where:
        return len(plan_study(cfg, recipe, Path(where) / "out", provisional=True))


def run_study_on_ray(cfg: Any, module: Any, out: Path, **options: Any) -> None:
    """Plan the study and train it on Ray (:func:`run_on_ray`), planning again after each part
    while the recipe waits for results (a tuning grid before the table's seeds)."""
    previous: list[str] | None = None
    while True:
        plan = plan_study(cfg, module, out)
        dirs = [str(r.run_dir) for r in plan]
        if not plan.complete and dirs == previous:  # trained, yet the results it waits for are unreadable
            raise UserError(f"the study waits for results it cannot read (a finished run's summary.json under "
                            f"{out} is missing or corrupt); run it without --executor ray to see which")
        previous = dirs
        run_on_ray(plan, **options)
        if plan.complete:
            return


def _train_task(spec_yaml: str, seed: int, run_dir: str, run_seed: int, options: dict[str, Any],
                imports: list[str], threads: int, *after: Any) -> str:
    """One run in a Ray worker (``after``: the finished runs it reads, awaited by Ray)."""
    import importlib

    import torch
    import yaml

    from distillab.engine.run import RunSpec, execute_run

    for name in imports:  # the driver's --import modules: registries are per process
        importlib.import_module(name)
    torch.set_num_threads(threads)
    spec = RunSpec.model_validate(yaml.safe_load(spec_yaml))
    study_dir = options.get("study_dir")
    execute_run(spec, seed, Path(run_dir), run_seed=run_seed, study_dir=study_dir and Path(study_dir),
                **{k: v for k, v in options.items() if k != "study_dir"})
    return run_dir


def run_on_ray(plan: list[PlannedRun], *, address: str | None = None, cpus: int = 1, gpus: float = 0,
               imports: list[str] | None = None, resume: bool = True, keep_checkpoints: bool = False,
               restart: bool = False, log: Any = print, study_dir: Path | None = None) -> None:
    """Train every planned run as a Ray task with ``cpus`` / ``gpus`` each, as soon as its inputs
    exist. ``address``: an existing cluster (``ray start --head`` prints it); None starts a local
    Ray on this machine. Run folders must be on storage every node sees (a shared filesystem)."""
    _refuse_unfinished(plan, resume, restart)
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'distillab[ray]' (or pip install ray)") from None
    from distillab.config import dump_yaml

    if not ray.is_initialized():
        if address:
            _probe(address)  # ray.init would retry an unreachable address for ever
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    have = ray.cluster_resources()
    for kind, want in (("CPU", cpus), ("GPU", gpus)):
        if want and have.get(kind, 0) < want:  # a task no node can take would wait for ever
            raise UserError(f"--ray-{kind.lower()}s {want:g}: the Ray cluster has {have.get(kind, 0):g} {kind}(s) in "
                            f"all; no run could ever start")
    task = ray.remote(_train_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    options = {"resume": resume, "keep_checkpoints": keep_checkpoints, "restart": restart,
               "study_dir": None if study_dir is None else str(study_dir)}
    refs: list[Any] = []
    for r in plan:
        refs.append(task.remote(dump_yaml(r.spec), r.seed, str(r.run_dir), r.run_seed, options, imports or [],
                                max(1, int(cpus)), *(refs[i] for i in r.after)))
    log(f"ray: {len(plan)} runs submitted ({sum(not r.after for r in plan)} ready now), {cpus} CPU(s) "
        f"and {gpus:g} GPU(s) each")
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            finished = ray.get(done[0])
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), Exception) else e
            # the runs still pending are stopped; those that read the failed run fail with it, and
            # Ray would print each of those failures as a traceback at exit: the line below says it
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
            for ref in pending:
                ray.cancel(ref)
            raise UserError(f"a run failed on Ray: {str(cause).splitlines()[0]}") from None
        log(f"ray: finished {finished} ({len(refs) - len(pending)}/{len(refs)})")


def _probe(address: str, timeout: float = 10.0) -> None:
    """Fail in ``timeout`` seconds, with one line, when nothing answers at a Ray ``HOST:PORT``."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if address == "auto":
        return
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answered within {timeout:g} s "
                        f"({e.strerror or type(e).__name__}); start one with `ray start --head`") from None


def _refuse_unfinished(plan: list[PlannedRun], resume: bool, restart: bool) -> None:
    """As the local executor, continue an unfinished run only when asked (--resume / --restart),
    and say so before any task starts rather than when Ray reaches that run."""
    if resume or restart:
        return
    unfinished = [r.run_dir for r in plan if (r.run_dir / CONFIG_FILE).is_file()
                  and not (r.run_dir / SUMMARY_FILE).is_file()]
    if unfinished:
        more = f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else ""
        raise unfinished_run_error(f"{unfinished[0]}{more}")
