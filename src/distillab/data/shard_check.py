"""A WebDataset folder's ``meta.json`` checked against itself and against its shards.

``meta.json`` says how many examples each split holds (the trainer divides by it, DDP ranks stop
after it), which shards hold them and what the images are. A meta.json that lies, a truncated
shard, a missing split or a shard list of the wrong type would otherwise end deep inside a
DataLoader worker, or train with wrong numbers. Every shard's tar headers are read once per
version of the file (size and mtime): examples are counted and each must hold an image and a
class label within the class list.
"""

from __future__ import annotations

import math
import tarfile
from pathlib import Path
from typing import Any

from distillab.errors import UserError

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
# The first bytes of each image format (and bytes 8..11 where the format names itself there: WebP).
SIGNATURES = {"png": ((b"\x89PNG\r\n\x1a\n", b""),), "jpg": ((b"\xff\xd8\xff", b""),),
              "jpeg": ((b"\xff\xd8\xff", b""),), "webp": ((b"RIFF", b"WEBP"),)}
_SCANNED: dict[tuple[str, int, int, int], int] = {}  # (shard, size, mtime, classes) → examples


def _bad(path: Path, what: str) -> UserError:
    return UserError(f"data webdataset: {path}: {what}; repack it with `distillab data pack`")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_meta(root: Path, meta: dict[str, Any]) -> None:
    """Raise a one-line :class:`UserError` unless ``meta`` (read from ``root/meta.json``) is well
    formed and matches the shards on disk."""
    path = root / "meta.json"
    classes, shape = meta["classes"], meta["shape"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _bad(path, "classes is not a list of class names")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_int(v) for v in shape)
            and shape[0] in (1, 3) and all(1 <= v <= 4096 for v in shape[1:])):
        raise _bad(path, f"shape {shape!r} is not [channels 1 or 3, height, width] with sides of 1..4096 pixels")
    for key in ("mean", "std"):
        v = meta[key]
        if not (isinstance(v, list) and len(v) == shape[0] and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
            raise _bad(path, f"{key} is not {shape[0]} finite numbers")
    if any(x <= 0 for x in meta["std"]):
        raise _bad(path, "std holds a value <= 0 (division by zero when normalising)")
    counts, shards = meta["counts"], meta["shards"]
    if not isinstance(counts, dict) or not isinstance(shards, dict):
        raise _bad(path, "counts and shards must be mappings of split names")
    per_shard = meta.get("shard_counts")
    if per_shard is not None and not isinstance(per_shard, dict):
        raise _bad(path, "shard_counts must be a mapping of split names")
    for split in ("train", "val", "test"):
        if split not in counts and split not in shards and split == "val":
            continue
        n, names = counts.get(split), shards.get(split)
        if not _int(n) or n < (0 if split == "val" else 1):
            raise _bad(path, f"counts.{split} is {n!r}, not a number of examples")
        if not isinstance(names, list) or not all(isinstance(s, str) for s in names) or (n and not names):
            raise _bad(path, f"shards.{split} is not a list of shard file names")
        found = []
        for name in names:
            shard = root / name
            if "/" in name or "\\" in name or name.startswith(".") or not shard.is_file():
                raise _bad(path, f"shards.{split} names {name!r}, not a shard file in {root}")
            found.append(_scan(shard, len(classes)))
        if sum(found) != n:
            raise _bad(path, f"counts.{split} says {n} examples, its shards hold {sum(found)}")
        if per_shard is not None and split in per_shard and per_shard[split] != found:
            raise _bad(path, f"shard_counts.{split} says {per_shard[split]!r}, the shards hold {found}")


def _scan(shard: Path, num_classes: int) -> int:
    """Examples in a tar shard (one key each), checked: an image and a class label in range each."""
    st = shard.stat()
    memo = (str(shard.resolve()), st.st_size, st.st_mtime_ns, num_classes)
    if memo in _SCANNED:
        return _SCANNED[memo]
    keys: dict[str, set[str]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                keys.setdefault(key, set()).add(ext)
                if ext in SIGNATURES:  # bytes that are not an image would fail later, in a DataLoader worker
                    f = tar.extractfile(m)
                    head = f.read(12) if f is not None else b""
                    if not any(head.startswith(sig) and head[8:12].startswith(tail) for sig, tail in SIGNATURES[ext]):
                        raise _bad(shard, f"example {key}'s {ext} payload is not a {ext.upper()} image "
                                          f"(it starts {head[:8]!r})")
                if ext == "cls":
                    f = tar.extractfile(m)
                    raw = f.read(32) if f is not None else b""
                    try:
                        label = int(raw.decode().strip())
                    except (ValueError, UnicodeDecodeError):
                        raise _bad(shard, f"example {key} has class label {raw[:16]!r}, not an integer") from None
                    if not 0 <= label < num_classes:
                        raise _bad(shard, f"example {key} has class {label}, outside 0..{num_classes - 1}")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _bad(shard, f"not a readable tar shard ({type(e).__name__}: truncated or corrupt)") from None
    for key, exts in keys.items():
        if "cls" not in exts or not any(e in exts for e in IMAGE_EXTS):
            raise _bad(shard, f"example {key} lacks an image ({'/'.join(IMAGE_EXTS)}) or a class label")
    _SCANNED[memo] = len(keys)
    return len(keys)
