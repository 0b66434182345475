"""One training run: spec → validated inputs → run directory with config, metrics, model, summary.

Everything that can fail on bad input (data, model name, teacher checkpoints) is checked
*before* the run directory is touched, and an existing directory holding a different config is
never overwritten.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from distillab.config import DataConfig, ModelConfig, Strict, TrainConfig, dump_yaml
from distillab.data import DataBundle, prepare_data
from distillab.engine import distributed
from distillab.engine.owned import MARKER, has_marker, write_marker
from distillab.engine.checkpoint import MODEL_FILE, atomic_write_text, drop_train_state, load_model, save_model
from distillab.engine.trainer import Progress, Trainer, choose_device, evaluate
from distillab.errors import UserError
from distillab.methods import Context, MethodConfig, Teacher, build_objective
from distillab.methods.supervised import SupervisedConfig
from distillab.models import count_params, create_model
from distillab.profile import count_macs
from distillab.transfer import InitConfig, apply_init, layerwise_param_groups

SUMMARY_FILE = "summary.json"


def derive_seed(seed: int, key: str) -> int:
    """The seed of the run ``key`` (its name in a study) for study seed ``seed``: a stable hash, so
    every run of a study starts from its own initialisation and data order (a Born-Again generation
    is a new random student, AnB's re-initialised layers are not baseB's initial weights), and the
    same command always gives the same weights. Runs that are compared *paired* on purpose (a
    student alone and the same student distilled) share a key."""
    import hashlib

    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF
CONFIG_FILE = "config.yaml"
_CORRUPT = object()  # a config.yaml that does not parse


class RunSpec(Strict):
    """Everything that defines one trained model (the seed is given separately)."""

    data: DataConfig = DataConfig()
    model: ModelConfig
    method: MethodConfig = SupervisedConfig()
    train: TrainConfig = TrainConfig()
    init: InitConfig | None = None


INPUTS_FILE = "inputs.json"
SEED_KEYS = ("seed", "run_seed")  # written after the spec in config.yaml
LOCK_FILE = "run.lock"


class RunLock:
    """An OS lock (``fcntl.flock``) on ``<run_dir>/run.lock``, held while a process trains the run.

    The kernel releases it when the process dies, so a crash never leaves a stale lock; a second
    process (another shell, a scheduler's retry) gets a clear error instead of training the same
    folder twice and interleaving its metrics and checkpoints."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl
        import os

        self.path = run_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._locked = False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._locked = True
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise UserError(f"run {run_dir} is being trained by another process (pid {holder}); wait for it to "
                            f"finish, or stop it and rerun with --resume") from None
        except OSError as e:
            if self._locked:  # locked, but the pid could not be written (disk full): keep the lock
                return
            os.close(self._fd)
            import errno

            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a filesystem without locks
                self._fd = -1
                return
            raise

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """The pid (as text, "?" if unknown) of the process holding ``run_dir``'s lock, or None."""
        import fcntl
        import os

        path = run_dir / LOCK_FILE
        if not path.is_file():
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        except OSError:
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        import fcntl
        import os

        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
# Keys naming *where* an input lives, not what it is: a study moved to another folder, run with an
# absolute --out or another --data-dir holding the same data is the same run. What the inputs
# are is checked by content instead (INPUTS_FILE: digests of teacher and init weights).
LOCATION_KEYS = (("method", "teacher"), ("init", "source"), ("data", "data_dir"), ("model", "kwargs", "checkpoint"),
                 ("method", "cache", "dir"),
                 ("data", "num_workers"),  # not a location, but how fast data is read, not what it is
                 ("train", "collapse"),  # what the watchdog does, not what is trained
                 ("train", "checkpoint_every"), ("train", "checkpoint_minutes"))  # when resume points are written


def without_locations(cfg: Any) -> Any:
    """A copy of a run's config without the keys in :data:`LOCATION_KEYS` (the input is not changed)."""
    import copy

    if not isinstance(cfg, dict):
        return cfg
    out = copy.deepcopy(cfg)
    data = out.get("data")
    if isinstance(data, dict) and not str(data.get("source", "fashion-mnist")).startswith("imagefolder:"):
        # only image folders are read at a size and channel count (run folders from before saved 32)
        data.pop("image_size", None)
        data.pop("channels", None)
    for *path, key in LOCATION_KEYS:
        node = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return out


def _with_defaults(saved: Any) -> Any:
    """A saved config re-read through today's schema, so keys added since (with their defaults,
    e.g. ``train.precision``) do not make an old run folder look like another configuration."""
    if not isinstance(saved, dict):
        return saved
    try:
        spec = RunSpec.model_validate({k: v for k, v in saved.items() if k not in SEED_KEYS})
    except ValidationError:
        return saved
    return {**yaml.safe_load(dump_yaml(spec)), **{k: saved[k] for k in SEED_KEYS if k in saved}}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, with old → new values (for the error message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} → {b!r})"]


def _file_digest(path: str | Path) -> str:
    """SHA-256 of a model file (a run folder means its model.safetensors), hashed once per version."""
    p = Path(path)
    p = (p / MODEL_FILE if p.is_dir() else p).resolve()
    st = p.stat()
    return _hash_file(p, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _hash_file(p: Path, size: int, mtime_ns: int) -> str:  # size and mtime key the cache
    import hashlib

    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _input_digests(spec: "RunSpec") -> dict[str, Any]:
    """Content digests of the weights a run starts from or learns from (missing files: skipped,
    the run's own checks report them)."""
    out: dict[str, Any] = {}
    teachers = getattr(spec.method, "teacher", None) or []
    try:
        if teachers:
            out["teachers"] = [_file_digest(t) for t in teachers]
        if spec.init is not None and spec.init.source:
            out["init"] = _file_digest(spec.init.source)
        if isinstance(spec.model.kwargs.get("checkpoint"), str):  # pretrained weights of a timm model
            out["checkpoint"] = _file_digest(spec.model.kwargs["checkpoint"])
    except OSError:
        return {}
    return out


def _check_run_dir(run_dir: Path, text: str, spec: "RunSpec | None" = None, restart: bool = False) -> str:
    """'new', 'resume', 'restart' or 'done'; refuses a directory that holds another configuration, naming the
    keys that differ. ``restart`` discards an *unfinished* run (never a finished one)."""
    cfg = run_dir / CONFIG_FILE
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file; choose another --out")
    if not run_dir.exists() or not any(p.name not in (LOCK_FILE, MARKER) for p in run_dir.iterdir()):
        return "new"
    if not cfg.is_file():
        raise UserError(f"run directory {run_dir} exists and is not a distillab run; choose another --out")
    try:
        saved = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, OSError):
        saved = _CORRUPT
    # Only a folder distillab made is ever changed (--restart deletes files in it): its marker, or, for
    # a folder from before markers, a run config with the seeds distillab records.
    legacy = isinstance(saved, dict) and all(k in saved for k in SEED_KEYS)
    if not has_marker(run_dir, "run") and not legacy:
        raise UserError(f"run directory {run_dir} exists and was not made by distillab (no {MARKER} marker); "
                        f"choose another --out")
    finished = (run_dir / SUMMARY_FILE).is_file()
    if restart and not finished:
        return "restart"  # discarded by the caller once the new inputs are known to be valid
    if saved is _CORRUPT:
        raise UserError(f"{cfg} is corrupt; delete {run_dir} to retrain that run")
    diff = _differences(without_locations(_with_defaults(saved)), without_locations(yaml.safe_load(text)))
    if diff:
        more = f" and {len(diff) - 2} more" if len(diff) > 2 else ""
        way_out = "" if finished else "; --restart discards this unfinished run"
        raise UserError(f"run directory {run_dir} holds a run with a different config ({'; '.join(diff[:2])}{more}); "
                        f"choose another --out or delete it{way_out}")
    inputs = run_dir / INPUTS_FILE
    if spec is not None and inputs.is_file():
        try:
            recorded = json.loads(inputs.read_text())
        except (ValueError, UnicodeDecodeError):
            recorded = None
        if not isinstance(recorded, dict):
            raise UserError(f"{inputs} is corrupt; delete {run_dir} to retrain that run")
        now = _input_digests(spec)
        changed = [k for k in recorded if k in now and recorded[k] != now[k]]
        if changed:
            raise UserError(f"run directory {run_dir} was trained from other {' and '.join(changed)} weights (their "
                            f"content changed); delete it to retrain, or choose another --out")
    if finished:
        if not (run_dir / MODEL_FILE).is_file():
            raise UserError(f"run {run_dir} is marked finished but its {MODEL_FILE} is missing; delete the folder "
                            f"to retrain it")
        return "done"
    return "resume"


def _discard(run_dir: Path) -> None:
    """Remove what a run writes (and nothing else) from an unfinished run folder distillab made:
    its own file names only; in ``tb/`` only TensorBoard event files, and the folder once empty."""
    for name in (CONFIG_FILE, INPUTS_FILE, "metrics.jsonl", "state.json"):
        (run_dir / name).unlink(missing_ok=True)
    for f in run_dir.glob("ckpt-*.safetensors"):
        f.unlink()
    tb = run_dir / "tb"
    if tb.is_dir() and not tb.is_symlink():
        for f in tb.glob("events.out.tfevents.*"):
            if f.is_file() and not f.is_symlink():
                f.unlink()
        try:
            tb.rmdir()
        except OSError:  # something else is in it: not ours to delete
            pass


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``run_dir/metrics.jsonl``, skipping lines that are not a JSON object
    (a half-written line from a crash); [] when there is no file."""
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's summary, checked: a corrupt file is a one-line error naming it."""
    path = run_dir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        summary = None
    if not isinstance(summary, dict) or not all(
            isinstance(summary.get(k), (int, float)) for k in ("test_acc", "test_errors", "params")):
        raise UserError(f"run summary {path} is corrupt; delete {run_dir} to retrain that run")
    return summary


def _param_groups(spec: RunSpec, objective) -> list[dict] | None:
    """Optimiser groups for transfer runs: every student parameter (frozen ones get no gradient,
    so the optimiser leaves them alone until they are unfrozen), optionally with per-block lrs."""
    if spec.init is None:
        return None
    student = objective.student
    lr = spec.train.optim.lr
    if spec.init.layer_decay is not None:
        groups = layerwise_param_groups(student, lr, spec.init.layer_decay)
    else:
        groups = [{"params": list(student.parameters()), "lr": lr}]
    in_student = {id(p) for p in student.parameters()}
    extra = [p for p in objective.trainable_parameters() if id(p) not in in_student]
    return groups + ([{"params": extra, "lr": lr}] if extra else [])


def execute_run(spec: RunSpec, seed: int, run_dir: Path, *, progress: Progress | None = None,
                device: torch.device | None = None, data: DataBundle | None = None,
                resume: bool = True, keep_checkpoints: bool = False, restart: bool = False,
                run_seed: int | None = None, study_dir: Path | None = None) -> dict[str, Any]:
    """Train one run and return its summary. ``seed`` picks the data (validation split, subsets,
    few-shot examples: the same for every run of a study seed); ``run_seed`` (default ``seed``)
    the initialisation, data order, augmentation and dropout of this run. A finished run is read back, never retrained; an
    unfinished one continues from its last checkpoint when ``resume``, else it is an error.
    Once the summary is written the resume checkpoint is deleted unless ``keep_checkpoints``
    (the final student is ``model.safetensors``; the checkpoint also holds optimiser state and
    connectors, and doubled the size of every finished run). ``restart`` discards an unfinished
    run (e.g. one whose loss became NaN) and trains it anew. ``study_dir``: the study folder holding
    the run, marked as distillab's when the run first writes into it."""
    run_seed = seed if run_seed is None else run_seed
    text = dump_yaml(spec) + f"seed: {seed}\nrun_seed: {run_seed}\n"
    state, _ = _decide(run_dir, text, spec, resume, restart)
    if state == "done":
        return read_summary(run_dir)
    device = device or choose_device()
    data = data or prepare_data(spec.data, seed, device, order_seed=run_seed, normalization=inherited_normalization(spec))
    c, _, w = data.shape

    def load_teacher(paths: list[str]) -> Teacher:
        members = [load_model(p, num_classes=data.num_classes, in_shape=data.shape,
                              data=(spec.data.source, data.classes), device=device) for p in paths]
        return Teacher(members)

    torch.manual_seed(run_seed)
    student = create_model(spec.model.name, data.num_classes, c, w, init=spec.model.init,
                           **spec.model.kwargs).to(device)
    callbacks = []
    if spec.init is not None:
        # No image-size check: conv blocks transfer across resolutions (BiT fine-tunes at a higher
        # one); copy_blocks rejects weights whose shapes do not fit.
        callbacks = apply_init(student, spec.init, lambda p: load_model(p, device=device), train=data.train)
    cache_record = None
    cache_cfg = getattr(spec.method, "cache", None)
    if cache_cfg is not None:  # the objective's teacher answers from stored outputs (engine/soft_labels.py)
        if not hasattr(data.train, "view_batch"):
            raise UserError("method.cache: the soft-label cache needs an in-memory source (it rebuilds stored "
                            "views by index); streaming sources distil online")
        from distillab.engine.soft_labels import open_cache

        paths = list(spec.method.teacher)
        cached, cache_record = open_cache(cache_cfg, paths, [_file_digest(p) for p in paths], data.train,
                                          load_teacher, device)
        load_teacher = lambda _paths: cached  # noqa: E731
    ctx = Context(load_teacher, data.shape, num_train=data.train.num_examples, epochs=spec.train.epochs)
    objective = build_objective(spec.method, student, ctx).to(device)
    param_groups = _param_groups(spec, objective)

    # Inputs are valid: only now touch the disk. Rank 0 claims the folder and re-checks it under the
    # lock: another process may have finished or started this run meanwhile (a run finished in
    # between is read back, never discarded by --restart).
    state, lock = _decide(run_dir, text, spec, resume, restart, claim=True, study_dir=study_dir)
    try:
        if state == "done":
            return read_summary(run_dir)
        return _train(spec, seed, run_seed, run_dir, objective, data, device, student, param_groups, callbacks, progress,
                      keep_checkpoints, cache_record)
    finally:
        if lock is not None:
            lock.release()


def inherited_normalization(spec: RunSpec) -> dict[str, list[float]] | None:
    """The input normalisation a run must use because a model it loads was trained with it: its
    transfer source's and its teachers' (which must all agree). None: the source's own statistics.
    Models saved before normalisation was recorded constrain nothing."""
    from distillab.engine.checkpoint import read_model_spec

    loads = list(getattr(spec.method, "teacher", None) or [])
    if spec.init is not None and spec.init.source:
        loads.insert(0, spec.init.source)
    known = [(p, n) for p in loads if (n := read_model_spec(p)[1].get("normalize")) is not None]
    if any(n != known[0][1] for _, n in known):
        raise UserError("the models this run loads were trained with different input normalisations ("
                        + "; ".join(f"{p}: mean {n['mean']}" for p, n in known)
                        + "); use a transfer source and teachers trained on one source")
    return known[0][1] if known else None


def unfinished_run_error(where: str) -> UserError:
    """The refusal when a run folder holds an unfinished run and neither --resume nor --restart was given."""
    return UserError(f"run directory {where} holds an unfinished run: pass --resume to continue it, "
                     f"--restart to discard it, or choose another --out")


def _decide(run_dir: Path, text: str, spec: RunSpec, resume: bool, restart: bool,
            claim: bool = False, study_dir: Path | None = None) -> tuple[str, "RunLock | None"]:
    """The run folder's state ('new', 'resume', 'restart', 'done'), decided by rank 0 and broadcast:
    under torchrun another rank looking at the folder itself could see rank 0's fresh config.yaml
    and take a new run for an unfinished one. With ``claim``, rank 0 also locks the folder and
    writes a new run's first files. Errors reach every rank, so all stop together."""
    error, state, lock = None, None, None
    if distributed.current().is_main:
        try:
            if claim:
                if study_dir is not None:
                    from distillab.recipes.study import claim_study_folder

                    claim_study_folder(study_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                lock = RunLock(run_dir)
            state = _check_run_dir(run_dir, text, spec, restart)
            if state in ("resume", "restart") and not claim and (pid := RunLock.holder(run_dir)) is not None:
                raise UserError(f"run {run_dir} is being trained by another process (pid {pid}); wait for it to "
                                f"finish (its results are then read back), or stop it first")
            if state == "resume" and not resume:
                raise unfinished_run_error(str(run_dir))
            if claim and state in ("new", "restart"):
                _start_files(run_dir, text, state, spec)
        except UserError as e:
            error = str(e)
    error, state = distributed.broadcast((error, state))
    if error:
        if lock is not None:
            lock.release()
        raise UserError(error)
    return state, lock


def _start_files(run_dir: Path, text: str, state: str, spec: RunSpec) -> None:
    """A new (or restarted) run's config and input digests; a resumed run's config is rewritten
    too (the same run, perhaps spelled with other paths)."""
    if state == "restart":
        _discard(run_dir)
    if not has_marker(run_dir, "run"):
        write_marker(run_dir, "run")
    atomic_write_text(run_dir / CONFIG_FILE, text)
    atomic_write_text(run_dir / INPUTS_FILE, json.dumps(_input_digests(spec)))


def _train(spec: RunSpec, seed: int, run_seed: int, run_dir: Path, objective: Any, data: DataBundle, device: torch.device,
           student: torch.nn.Module, param_groups: Any, callbacks: list, progress: Progress | None,
           keep_checkpoints: bool, cache_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train, save the student, evaluate, write the summary (run folder locked by rank 0)."""
    c, _, w = data.shape
    dist = distributed.current()
    if dist.is_main and not has_marker(run_dir, "run"):  # a folder from before markers existed: adopted
        write_marker(run_dir, "run")
    if dist.is_main and not (run_dir / INPUTS_FILE).is_file():  # a folder from before digests existed
        atomic_write_text(run_dir / INPUTS_FILE, json.dumps(_input_digests(spec)))
    t0 = time.perf_counter()
    trainer = Trainer(objective, data.train, spec.train, run_dir, seed=run_seed, val=data.val, progress=progress,
                      param_groups=param_groups, callbacks=callbacks)
    history = trainer.fit()
    wall = time.perf_counter() - t0
    model_spec = {"name": spec.model.name, "kwargs": spec.model.kwargs, "num_classes": data.num_classes,
                  "in_chans": c, "img_size": w, "data": spec.data.source, "classes": data.classes,
                  "normalize": data.normalization}
    if dist.is_main:
        save_model(run_dir / MODEL_FILE, student, model_spec)
    test = evaluate(objective.eval_model(), data.test)
    summary = {
        "seed": seed, "run_seed": run_seed, "model": spec.model.name, "method": spec.method.name,
        "test_acc": test["acc"], "test_top5": test["top5"], "test_errors": test["errors"], "test_n": test["n"],
        "val_acc": history[-1].get("val_acc") if history else None,
        "train_acc": history[-1].get("train_acc") if history else None,
        "val_n": getattr(data.val, "num_examples", None) if data.val is not None else None,
        "params": count_params(student), "macs": count_macs(student, data.shape),
        "epochs": spec.train.epochs, "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds_this_session": wall, "device": device.type,
    }
    if cache_record is not None:
        summary["soft_label_cache"] = cache_record
    if trainer.warning:  # the collapse watchdog fired and the run ended at chance: a failed training
        summary["warning"] = trainer.warning
    if dist.is_main:
        atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=1))  # the run is now done
        if not keep_checkpoints:
            drop_train_state(run_dir)
    distributed.barrier()  # the next run (a student of this teacher) starts once its files exist
    return summary
