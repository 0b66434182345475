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
share it. It is written to a temporary folder and renamed into place, so a crash or a concurrent
builder never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from distillab.config import SoftLabelCacheConfig
from distillab.methods.base import Teacher

# 2: shifted views are padded with black (raw 0), not the normalised 0 (a grey) as in 1, so caches
# of format 1 hold labels of other crops and are never read.
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


class CachedTeacher(Teacher):
    """Answers :meth:`member_logits` (and so Teacher's :meth:`soft_targets`) from a cache: by each
    example's index and view (``batch.extra["view"]``, 0 when absent). A Teacher without members,
    frozen like any other, for the logit-only methods (KD, Born-Again, Label Refinery); it has no
    features to tap."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        super().__init__([])
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
    def member_logits(self, batch: Any) -> list[torch.Tensor]:
        if batch.index is None:
            raise RuntimeError("a soft-label cache needs each example's index in the batch")
        view = batch.extra.get("view")
        if view is None:
            view = torch.zeros_like(batch.index)
        full = self.lookup(batch.index, view).to(batch.x.device)
        return list(full.unbind(1))

    def probs(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        raise RuntimeError("this method runs the teacher on inputs it builds itself; it cannot use a soft-label "
                           "cache (use kd, born-again or refinery)")


@torch.no_grad()
def build(folder: Path, teacher: Any, train: Any, cfg: SoftLabelCacheConfig, view_seed: int,
          device: torch.device, chunk: int = 1024) -> dict[str, Any]:
    """Run ``teacher`` (a :class:`~distillab.methods.base.Teacher`) over every (view, example) of
    ``train`` and write the cache into ``folder`` (atomically). Returns its metadata."""
    import numpy as np

    t0 = time.perf_counter()
    n, members = len(train.y), len(teacher.members)
    sample = teacher.members[0](train.view_batch(torch.arange(1, device=train.device),
                                                 torch.zeros(1, dtype=torch.long, device=train.device)))
    classes = sample.shape[1]
    k = min(cfg.top_k or classes, classes)
    if k < classes and classes > 32767:
        raise ValueError("top_k indices are int16: at most 32767 classes")
    # unique across processes and machines sharing a filesystem (Ray, multi-node DDP)
    tmp = folder.with_name(f"{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    logp = np.lib.format.open_memmap(tmp / "logp.npy", mode="w+", dtype=np.float16, shape=(cfg.views, n, members, k))
    idx = (np.lib.format.open_memmap(tmp / "idx.npy", mode="w+", dtype=np.int16, shape=(cfg.views, n, members, k))
           if k < classes else None)
    for v in range(cfg.views):
        for start in range(0, n, chunk):
            index = torch.arange(start, min(start + chunk, n), device=train.device)
            xb = train.view_batch(index, torch.full_like(index, v)).to(device)
            out = torch.stack([torch.log_softmax(m(xb).float(), 1) for m in teacher.members], 1)  # (B, M, C)
            if idx is not None:
                out, cls = out.topk(k, dim=2)
                idx[v, start:start + len(index)] = cls.cpu().numpy().astype(np.int16)
            logp[v, start:start + len(index)] = out.cpu().numpy().astype(np.float16)
    logp.flush()
    if idx is not None:
        idx.flush()
    size = sum(p.stat().st_size for p in tmp.glob("*.npy"))
    meta = {"format": FORMAT, "views": cfg.views, "top_k": k, "classes": classes, "members": members, "examples": n,
            "view_seed": view_seed, "bytes": size, "bytes_per_example_view": size / (n * cfg.views),
            "build_seconds": time.perf_counter() - t0}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        tmp.rename(folder)  # atomic; another process may have finished the same cache first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        meta = json.loads((folder / "meta.json").read_text())
    return meta


def open_cache(cfg: SoftLabelCacheConfig, teacher_paths: list[str], digests: list[str], train: Any,
               load_teacher: Callable[[list[str]], Any], device: torch.device) -> tuple[CachedTeacher, dict[str, Any]]:
    """The cache for these teachers and this training data, built first if missing. Returns the
    cached teacher and a record for the run's summary (key, size, build time, whether it was hit)."""
    key = cache_key(digests, train, cfg)
    first = Path(teacher_paths[0])
    root = Path(cfg.dir) if cfg.dir else (first if first.is_dir() else first.parent) / "soft-labels"
    folder = root / key
    view_seed = int(key[:8], 16) & 0x7FFF_FFFF
    hit = (folder / "meta.json").is_file()
    if hit:
        meta = json.loads((folder / "meta.json").read_text())
    else:
        root.mkdir(parents=True, exist_ok=True)
        train.use_views(cfg.views, view_seed)  # build on exactly the crops training will rebuild
        meta = build(folder, load_teacher(teacher_paths), train, cfg, view_seed, device)
    train.use_views(cfg.views, meta["view_seed"])
    record = {"key": key, "folder": str(folder), "hit": hit, "bytes": meta["bytes"],
              "build_seconds": None if hit else meta["build_seconds"], "views": meta["views"], "top_k": meta["top_k"]}
    return CachedTeacher(folder, meta), record
