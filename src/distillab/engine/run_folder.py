"""A run folder: the one module that knows its file names, its lock, its identity checks and how
to read what a run wrote. The trainer, the planner, the report, the HTML page, the recipes and the
Python API all reach run folders through it.

  ``config.yaml``        what the run is (its spec and seeds): compared with a new request
  ``inputs.json``        SHA-256 of the weights it starts from or learns from (teachers, init)
  ``metrics.jsonl``      one JSON record per committed epoch
  ``state.json`` + ``ckpt-<epoch>.safetensors``  the resume point (engine/checkpoint.py)
  ``model.safetensors``  the trained student; ``summary.json`` marks the run finished
  ``run.lock``           held (``flock``) by the process training it; ``.distillab`` its owner marker
  ``api_run.json``       a Python-API run's record (method, training config, seed, parameter shapes)
  ``tb/``                TensorBoard event files
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

from distillab.engine.owned import MARKER, has_marker, write_marker
from distillab.errors import UserError

CONFIG_FILE = "config.yaml"
INPUTS_FILE = "inputs.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
LOCK_FILE = "run.lock"
API_RECORD = "api_run.json"
TB_DIR = "tb"
CHECKPOINT_GLOB = "ckpt-*.safetensors"
SEED_KEYS = ("seed", "run_seed")  # written after the spec in config.yaml
_CORRUPT = object()  # a config.yaml that does not parse


def checkpoint_name(epoch: int) -> str:
    """The resume checkpoint written after ``epoch`` (``state.json`` names only such a file)."""
    return f"ckpt-{epoch:04d}.safetensors"


def is_finished(run_dir: Path) -> bool:
    """Whether the run wrote its summary (the last file a run writes)."""
    return (run_dir / SUMMARY_FILE).is_file()


# Keys naming *where* an input lives, not what it is: a study moved to another folder, run with an
# absolute --out or another --data-dir holding the same data is the same run. What the inputs
# are is checked by content instead (INPUTS_FILE: digests of teacher and init weights).
LOCATION_KEYS = (("method", "teacher"), ("init", "source"), ("data", "data_dir"), ("model", "kwargs", "checkpoint"),
                 ("method", "cache", "dir"),
                 ("data", "num_workers"),  # not a location, but how fast data is read, not what it is
                 ("train", "collapse"),  # what the watchdog does, not what is trained
                 ("train", "checkpoint_every"), ("train", "checkpoint_minutes"))  # when resume points are written


def without_locations(cfg: Any) -> Any:
    """A copy of a run's config without the keys in :data:`LOCATION_KEYS` (the input is not changed),
    nor ``data.image_size`` / ``data.channels`` unless the source is an image folder."""
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
        node: Any = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return out


def with_defaults(saved: Any) -> Any:
    """A saved config re-read through today's schema, so keys added since (with their defaults,
    e.g. ``train.precision``) do not make an old run folder look like another configuration."""
    from pydantic import ValidationError

    from distillab.config import dump_yaml
    from distillab.engine.run import RunSpec  # the schema of a run (imports every layer: on use only)

    if not isinstance(saved, dict):
        return saved
    try:
        spec = RunSpec.model_validate({k: v for k, v in saved.items() if k not in SEED_KEYS})
    except ValidationError:
        return saved
    return {**yaml.safe_load(dump_yaml(spec)), **{k: saved[k] for k in SEED_KEYS if k in saved}}


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, with old → new values (for the error message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} → {b!r})"]


def file_digest(path: str | Path) -> str:
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


def input_digests(spec: Any) -> dict[str, Any]:
    """Content digests of the weights a run starts from or learns from (missing files: skipped,
    the run's own checks report them)."""
    out: dict[str, Any] = {}
    teachers = getattr(spec.method, "teacher", None) or []
    try:
        if teachers:
            out["teachers"] = [file_digest(t) for t in teachers]
        if spec.init is not None and spec.init.source:
            out["init"] = file_digest(spec.init.source)
        if isinstance(spec.model.kwargs.get("checkpoint"), str):  # pretrained weights of a timm model
            out["checkpoint"] = file_digest(spec.model.kwargs["checkpoint"])
    except OSError:
        return {}
    return out


def check_run_dir(run_dir: Path, text: str, spec: Any = None, restart: bool = False) -> str:
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
    diff = differences(without_locations(with_defaults(saved)), without_locations(yaml.safe_load(text)))
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
        now = input_digests(spec)
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


def discard(run_dir: Path) -> None:
    """Remove what a run writes (and nothing else) from an unfinished run folder distillab made:
    its own file names only; in ``tb/`` only TensorBoard event files, and the folder once empty."""
    for name in (CONFIG_FILE, INPUTS_FILE, METRICS_FILE, STATE_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for f in run_dir.glob(CHECKPOINT_GLOB):
        f.unlink()
    tb = run_dir / TB_DIR
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
        lines = (Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8").splitlines()
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


def metric_curve(run_dir: Path, key: str = "val_acc") -> list[float]:
    """``key`` (validation accuracy) after every epoch, checked: a corrupt metrics file is a one-line
    error naming it (a recipe that plots the curve evaluates every epoch)."""
    path = run_dir / METRICS_FILE
    try:
        lines = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (ValueError, UnicodeDecodeError):
        lines = None
    if lines is None or not all(isinstance(ln, dict) and isinstance(ln.get(key, 0.0), (int, float))
                                for ln in lines):
        raise UserError(f"{path} is corrupt; delete {run_dir} to retrain that run")
    return [ln.get(key, float("nan")) for ln in lines]


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


def claim_api_run(folder: Path, record: dict[str, Any], config: dict[str, Any]) -> None:
    """A Python-API run's identity, checked as a CLI run's is: ``record`` (method, training config,
    seed, parameter shapes) is compared with the one the folder holds, naming the keys that differ
    (a sweep reusing one ``run_dir`` must not get the previous call's weights back); a new folder
    gets the owner marker, ``config.yaml`` (so ``distillab report`` groups it) and the record."""
    from distillab.engine.checkpoint import atomic_write_text

    path = folder / API_RECORD
    now = json.loads(json.dumps(record))
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            before = None
        if before != now:
            diff = differences(before, now) if isinstance(before, dict) else []
            what = f": {'; '.join(diff[:2])}{' and more' if len(diff) > 2 else ''}" if diff else ""
            raise UserError(f"run_dir {folder} holds another run (different method, training settings, seed or "
                            f"model{what}); give each call its own run_dir, or delete it")
        if not has_marker(folder, "run"):  # a folder from before markers: adopted
            write_marker(folder, "run")
        return
    if folder.is_dir() and any(p.name not in (LOCK_FILE, MARKER) for p in folder.iterdir()):
        raise UserError(f"run_dir {folder} is not empty and was not written by distillab.distill; use a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, "run")
    atomic_write_text(folder / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(path, json.dumps(record))


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
