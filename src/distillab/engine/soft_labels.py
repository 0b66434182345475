"""A soft-label cache: run the teacher once, train students from its stored outputs.

Online distillation runs the teacher's forward pass on every batch of every epoch of every
student; for a teacher bigger than its student that is most of the cost (KD's 1.7x-2.8x of plain
training in docs/performance.md). The cache stores, for each training example and each of ``V``
augmented *views*, the teacher's top-k log-probabilities (fp16) and their class indices (int16),
memory-mapped from ``.npy`` files. A view's augmentation parameters are a pure function of
(view seed, example index, view) (:class:`~distillab.data.loader.KeyedRandom`), so a training epoch
picks one stored view per example, rebuilds exactly that crop, and reads the labels that belong
to it — the FKD / ReLabel idea, and what Label Refinery's per-crop labels need.

Log-probabilities, not probabilities at one temperature: softmax(log p / T) = softmax(z / T) and
z-scoring is shift-invariant, so one cache serves any temperature, logit standardisation and
ensembles (one entry per member). With ``top_k`` < classes the remaining probability mass is
spread evenly over the other classes.

A cache lives in ``<first teacher's run folder>/soft-labels/<key>/`` (or ``cache.dir``); its key
hashes the teachers' weight digests, the exact training tensor and labels, the normalisation, the
augmentation, V and k — any change builds a new one. Several students of one teacher (a study)
share it. It is written to a temporary folder with ordinary writes (a full disk is a clean error)
and renamed into place, so a crash or a concurrent builder never leaves a half-written cache
behind; a killed build's temporary folder is removed by the next build. A cache is used only when
its manifest (``meta.json``: key, each file's shape, dtype, size and SHA-256) matches what is on
disk; otherwise it is rebuilt.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from distillab.config import SoftLabelCacheConfig
from distillab.errors import UserError
from distillab.methods.base import BaseTeacher

# 2: meta.json is a manifest (key, each file's shape, dtype, size, SHA-256), and shifted views are
# padded with black (raw 0), not the normalised 0 (a grey): caches of format 1 are never read.
FORMAT = 2


def _digest_tensor(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().contiguous().cpu()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.uint8 else t.numpy().tobytes())


def cache_key(teacher_digests: list[str], train: Any, cfg: SoftLabelCacheConfig) -> str:
    """What the stored labels depend on: teachers, data, normalisation, augmentation, V, k."""
    h = hashlib.sha256()
    aug = train.augment.model_dump() if train.augment is not None else None
    h.update(json.dumps({"format": FORMAT, "teachers": teacher_digests, "aug": aug, "views": cfg.views,
                         "top_k": cfg.top_k}, sort_keys=True).encode())
    for t in (train.x, train.y, train._scale, train._shift):
        _digest_tensor(h, t)
    return h.hexdigest()[:24]


class CachedTeacher(BaseTeacher):
    """The teacher interface answered from a cache: :meth:`logits` (and so :meth:`soft_targets`)
    by each example's index and view (``batch.extra["view"]``, 0 when absent), for the logit-only
    methods (KD, Born-Again, Label Refinery); :meth:`single` refuses, as it has no network to tap."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        import numpy as np

        self.folder, self.meta = folder, meta
        self.num_classes, self.top_k = meta["classes"], meta["top_k"]
        self._logp = np.load(folder / "logp.npy", mmap_mode="r")  # (V, N, M, k) fp16
        self._idx = np.load(folder / "idx.npy", mmap_mode="r") if self.top_k < self.num_classes else None

    def lookup(self, index: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Full log-probabilities (B, M, C) of examples ``index`` in views ``view``."""
        i, v = index.cpu().numpy(), view.cpu().numpy()
        logp = torch.from_numpy(self._logp[v, i].astype("float32"))  # (B, M, k)
        if self._idx is None:
            return logp
        cls = torch.from_numpy(self._idx[v, i].astype("int64"))
        rest = (1 - logp.exp().sum(-1, keepdim=True)).clamp_min(1e-8) / (self.num_classes - self.top_k)
        full = rest.log().expand(*logp.shape[:2], self.num_classes).clone()
        return full.scatter_(2, cls, logp)

    @torch.no_grad()
    def logits(self, batch: Any) -> list[torch.Tensor]:
        if batch.index is None:
            raise RuntimeError("a soft-label cache needs each example's index in the batch")
        view = batch.extra.get("view")
        if view is None:
            view = torch.zeros_like(batch.index)
        full = self.lookup(batch.index, view).to(batch.x.device)
        return list(full.unbind(1))


class _NpyWriter:
    """An ``.npy`` file written front to back with ordinary writes (a full disk is an ``OSError``, not
    the SIGBUS of a memory-mapped write), hashed as it is written."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
        import numpy as np

        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.hash = hashlib.sha256()
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": shape})
        self._write(header.getvalue())

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.hash.update(data)

    def write(self, rows: Any) -> None:
        self._write(rows.astype(self.dtype, copy=False).tobytes())

    def close(self) -> dict[str, Any]:
        self.f.flush()
        os.fsync(self.f.fileno())  # a late ENOSPC (delayed allocation) surfaces here, not on a read
        self.f.close()
        return {"shape": list(self.shape), "dtype": self.dtype.str, "bytes": self.path.stat().st_size,
                "sha256": self.hash.hexdigest()}


@torch.no_grad()
def build(folder: Path, teacher: Any, train: Any, cfg: SoftLabelCacheConfig, view_seed: int,
          device: torch.device, chunk: int = 1024, key: str = "") -> dict[str, Any]:
    """Run ``teacher`` (a :class:`~distillab.methods.base.Teacher`) over every (view, example) of
    ``train`` and write the cache into ``folder`` (atomically: a temporary folder renamed into
    place). Returns its metadata, which is also its manifest: the key, and each file's shape,
    dtype, size and SHA-256."""
    import numpy as np

    t0 = time.perf_counter()
    n, members = len(train.y), len(teacher.members)
    sample = teacher.members[0](train.view_batch(torch.arange(1, device=train.device),
                                                 torch.zeros(1, dtype=torch.long, device=train.device)))
    classes = sample.shape[1]
    k = min(cfg.top_k or classes, classes)
    if k < classes and classes > 32767:
        raise ValueError("top_k indices are int16: at most 32767 classes")
    _remove_stale_temporaries(folder.parent)
    # unique across processes and machines sharing a filesystem (Ray, multi-node DDP)
    tmp = folder.with_name(f"{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        logp = _NpyWriter(tmp / "logp.npy", np.float16, (cfg.views, n, members, k))
        idx = _NpyWriter(tmp / "idx.npy", np.int16, (cfg.views, n, members, k)) if k < classes else None
        for v in range(cfg.views):  # C order: (view, example) rows are written in file order
            for start in range(0, n, chunk):
                index = torch.arange(start, min(start + chunk, n), device=train.device)
                xb = train.view_batch(index, torch.full_like(index, v)).to(device)
                out = torch.stack([torch.log_softmax(m(xb).float(), 1) for m in teacher.members], 1)  # (B, M, C)
                if idx is not None:
                    out, cls = out.topk(k, dim=2)
                    idx.write(cls.cpu().numpy())
                logp.write(out.cpu().numpy())
        files = {"logp.npy": logp.close()}
        if idx is not None:
            files["idx.npy"] = idx.close()
        size = sum(f["bytes"] for f in files.values())
        meta = {"format": FORMAT, "key": key, "views": cfg.views, "top_k": k, "classes": classes, "members": members,
                "examples": n, "view_seed": view_seed, "files": files, "bytes": size,
                "bytes_per_example_view": size / (n * cfg.views), "build_seconds": time.perf_counter() - t0}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    except OSError as e:
        _remove_cache_folder(tmp)
        reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(f"cannot write the soft-label cache in {folder.parent} ({reason}); nothing was kept — free "
                        f"space or set method.cache.dir, then rerun with --resume") from None
    try:
        tmp.rename(folder)  # atomic; another process may have finished the same cache first
    except OSError:
        _remove_cache_folder(tmp)
        # Another process built the same cache first: take it if its manifest is the cache asked
        # for and its files are intact. Compare the identity keys only — its build time (and, on
        # a machine where the teacher is not bit-reproducible, its checksums) are its own.
        other, problem = _valid_meta(folder, {k: meta[k] for k in IDENTITY_KEYS})
        if other is None:
            raise UserError(f"soft-label cache {folder} could not be written and what is there is invalid "
                            f"({problem}); delete it and rerun") from None
        meta = other
    return meta


CACHE_FILES = ("logp.npy", "idx.npy", "meta.json")
# What makes two caches the same cache (the manifest keys open_cache asks for).
IDENTITY_KEYS = ("format", "key", "views", "view_seed", "classes", "top_k", "members", "examples")


def _remove_cache_folder(folder: Path) -> bool:
    """Delete a cache folder's own files (never anything else), then the folder if that empties it."""
    for name in CACHE_FILES:
        p = folder / name
        if p.is_file() or p.is_symlink():
            p.unlink()
    try:
        folder.rmdir()
        return True
    except OSError:
        return not folder.exists()


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary folders of builds killed on this machine (their process is gone): left by a kill -9
    or a crash, never by a finished build."""
    import re

    pattern = re.compile(r"[0-9a-f]{24}\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}")
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = pattern.fullmatch(p.name)
        if not m or m["host"] != socket.gethostname() or not p.is_dir() or p.is_symlink():
            continue
        try:
            os.kill(int(m["pid"]), 0)
            continue  # still building
        except ProcessLookupError:
            _remove_cache_folder(p)
        except (PermissionError, OverflowError, ValueError):
            continue


def _file_problem(path: Path, rec: Any) -> str | None:
    """Why a cache file does not match its manifest entry (size, .npy header, SHA-256), or None."""
    import numpy as np

    if not isinstance(rec, dict) or not isinstance(rec.get("bytes"), int) or not isinstance(rec.get("sha256"), str):
        return f"no manifest entry for {path.name}"
    try:
        if path.stat().st_size != rec["bytes"]:
            return f"{path.name} has {path.stat().st_size} bytes, the manifest says {rec['bytes']}"
        arr = np.load(path, mmap_mode="r")
        if list(arr.shape) != rec.get("shape") or arr.dtype.str != rec.get("dtype"):
            return (f"{path.name} holds {arr.dtype.str} {list(arr.shape)}, the manifest says {rec.get('dtype')} "
                    f"{rec.get('shape')}")
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, ValueError) as e:
        return f"{path.name} is unreadable ({type(e).__name__})"
    if h.hexdigest() != rec["sha256"]:
        return f"{path.name} does not match its checksum"
    return None


def _valid_meta(folder: Path, want: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The cache's metadata if it is the cache asked for, complete and intact, else (None, why).
    ``want``: the values the manifest must hold (key, views, view seed, k, classes, members,
    examples)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "meta.json is missing"
    except (OSError, ValueError, UnicodeDecodeError):
        return None, "meta.json is corrupt"
    if not isinstance(meta, dict):
        return None, "meta.json is not a mapping"
    for k, v in want.items():
        if meta.get(k) != v or type(meta.get(k)) is not type(v):
            return None, f"meta.json says {k} {meta.get(k)!r}, expected {v!r}"
    files = meta.get("files")
    if not isinstance(files, dict):
        return None, "meta.json lists no files (an older or foreign cache)"
    shape = [meta["views"], meta["examples"], meta["members"], meta["top_k"]]
    needed = ["logp.npy", *(["idx.npy"] if meta["top_k"] < meta["classes"] else [])]
    for name in needed:
        rec = files.get(name)
        if not isinstance(rec, dict) or rec.get("shape") != shape:
            return None, f"meta.json gives {name} no shape {shape}"
        problem = _file_problem(folder / name, rec)
        if problem:
            return None, problem
    return meta, ""


def open_cache(cfg: SoftLabelCacheConfig, teacher_paths: list[str], digests: list[str], train: Any,
               load_teacher: Callable[[list[str]], Any], device: torch.device) -> tuple[CachedTeacher, dict[str, Any]]:
    """The cache for these teachers and this training data, built first if missing or invalid (its
    manifest — key, shapes, dtypes, sizes and a checksum of each file — must match; otherwise it is
    rebuilt, and the summary's record says why). Returns the cached teacher and a record for the
    run's summary (key, size, build time, whether it was hit)."""
    key = cache_key(digests, train, cfg)
    first = Path(teacher_paths[0])
    root = Path(cfg.dir) if cfg.dir else (first if first.is_dir() else first.parent) / "soft-labels"
    folder = root / key
    view_seed = int(key[:8], 16) & 0x7FFF_FFFF
    from distillab.engine.checkpoint import read_model_spec

    classes = read_model_spec(teacher_paths[0])[1].get("num_classes")
    if not isinstance(classes, int) or classes < 1:
        raise UserError(f"teacher {teacher_paths[0]}: its model spec gives no number of classes")
    want = {"format": FORMAT, "key": key, "views": cfg.views, "view_seed": view_seed, "classes": classes,
            "top_k": min(cfg.top_k or classes, classes), "members": len(teacher_paths), "examples": len(train.y)}
    rebuilt = None
    meta, problem = _valid_meta(folder, want) if folder.exists() else (None, "")
    hit = meta is not None
    if not hit:
        if folder.exists() or folder.is_symlink():
            if folder.is_symlink() or not folder.is_dir() or not _remove_cache_folder(folder):
                raise UserError(f"soft-label cache {folder} is invalid ({problem}) and holds files distillab did "
                                f"not write; move it away or set method.cache.dir")
            rebuilt = problem
            print(f"note: soft-label cache {folder} was invalid ({problem}); rebuilding it", file=sys.stderr)
        root.mkdir(parents=True, exist_ok=True)
        train.use_views(cfg.views, view_seed)  # build on exactly the crops training will rebuild
        meta = build(folder, load_teacher(teacher_paths), train, cfg, view_seed, device, key=key)
    train.use_views(cfg.views, meta["view_seed"])
    record = {"key": key, "folder": str(folder), "hit": hit, "bytes": meta["bytes"],
              "build_seconds": None if hit else meta["build_seconds"], "views": meta["views"], "top_k": meta["top_k"]}
    if rebuilt:
        record["rebuilt_because"] = rebuilt
    return CachedTeacher(folder, meta), record
