"""Data that does not fit in memory: WebDataset tar shards, read batch by batch.

``distillab data pack SRC OUT`` writes a source (a built-in one, or ``imagefolder:PATH`` read file
by file, at its own size and channels unless told otherwise) as shards
``OUT/{train,val,test}-NNNNNN.tar`` — each example a PNG (or the image folder's original
JPEG/PNG/WebP bytes when they need no resizing), its class and its index as the key — plus
``OUT/meta.json`` with the class names, counts, image shape and the normalisation constants,
accumulated while packing. A config then names ``source: webdataset:OUT``.

Reading: persistent DataLoader workers read their share of the shards with a small tar reader,
decode each image with Pillow through the in-memory image-folder loader's conversion
(``images.to_array``) and send stacked uint8 chunks; the main process normalises with the
constants from ``meta.json`` (or those a transferred model was trained with) and augments whole
batches, as the in-memory loader does. The shard order, each worker's shuffle buffer and the
augmentation are seeded by (seed, epoch), so a resumed epoch sees the same batches (for the same
``data.num_workers``); under DDP every rank reads a disjoint set of shards and stops after the same
number of batches. Memory holds a shuffle buffer per worker, never the dataset.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distillab.config import AugmentConfig
from distillab.data.batch import Batch
from distillab.data.loader import augment_batch, center_crop_batch, epoch_seed, normalizer
from distillab.data.sources import register_source
from distillab.errors import UserError

if TYPE_CHECKING:
    import numpy as np

META = "meta.json"
SPLITS = ("train", "val", "test")


def read_meta(root: Path) -> dict[str, Any]:
    path = root / META
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"data webdataset: {path} not found (write shards with `distillab data pack SRC {root}`)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"data webdataset: {path} is corrupt") from None
    if not isinstance(meta, dict) or not {"classes", "shape", "counts", "shards", "mean", "std"} <= set(meta):
        raise UserError(f"data webdataset: {path} lacks classes/shape/counts/shards/mean/std")
    from distillab.data.shard_check import check_meta

    check_meta(root, meta)  # types, ranges, and the counts against the shards themselves
    return meta


# Images are encoded and decoded with Pillow: torchvision 0.29 deprecates its own image codecs
# (torchvision.io.decode_image warns on every call) in favour of TorchCodec.
def _encode_png(x: torch.Tensor) -> bytes:
    from PIL import Image

    arr = x.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


_FORMATS = {"png": ("PNG",), "jpg": ("JPEG",), "jpeg": ("JPEG",), "webp": ("WEBP",)}


def _decode(raw: bytes, channels: int, size: int, ext: str | None = None) -> "np.ndarray":
    """Image bytes as ``(size, size, channels)`` uint8, through the in-memory loader's conversion
    (:func:`~distillab.data.images.to_array`: 16-bit scaled, grey or RGB, resized only if needed).
    ``ext`` names the format (the shard check has matched its signature), which spares Pillow
    probing every format: a third of the time of a tiny PNG."""
    from PIL import Image

    from distillab.data.images import to_array

    with Image.open(io.BytesIO(raw), formats=_FORMATS.get(ext or "")) as im:
        return to_array(im, size, channels)


PAYLOADS = ("png", "jpg", "jpeg", "webp")  # what a reader decodes (shard_check.IMAGE_EXTS)


def _folder_format(source: str, image_size: int | None, channels: int | None) -> tuple[int, int]:
    """(channels, side) an image folder is packed at: as the in-memory ``imagefolder:`` loader reads it."""
    from distillab.data.images import image_format, list_images

    root = Path(source.split(":", 1)[1]).expanduser()
    folders = [(f, list_images(f)[0]) for f in (root / "train", _test_folder(root)) if f.is_dir()]
    if not folders:
        raise UserError(f"data imagefolder: {root} needs train/ and test/ (or val/) subfolders of class folders")
    return image_format(folders, image_size, channels)


def _test_folder(root: Path) -> Path:
    return next((root / s for s in ("test", "val") if (root / s).is_dir()), root / "test")


def _examples(source: str, split: str, data_dir: str | None, fmt: tuple[int, int] | None,
              indices: list[int] | None) -> tuple[Iterator[tuple[bytes, str, int, torch.Tensor]], int, list[str]]:
    """(image bytes, extension, label, decoded uint8 image) for each example of a split; ``fmt``:
    the (channels, side) of an image folder's images (see :func:`_folder_format`)."""
    if source.startswith("imagefolder:"):
        from distillab.data.images import list_images, read_image_sized

        root = Path(source.split(":", 1)[1]).expanduser()
        folder = _test_folder(root) if split == "test" else root / "train"
        samples, names = list_images(folder)  # each real folder once (symlink loops), ImageFolder's order
        picks = indices if indices is not None else list(range(len(samples)))
        channels, size = fmt if fmt is not None else (3, 32)

        def gen() -> Iterator[tuple[bytes, str, int, torch.Tensor]]:
            for i in picks:
                path, label = samples[i]
                arr, native = read_image_sized(path, size, channels)  # one-line errors: FIFOs, bombs, garbage
                img = torch.from_numpy(arr).permute(2, 0, 1)
                ext = Path(path).suffix.lower().lstrip(".")
                ext = "jpg" if ext == "jpeg" else ext
                if native == (size, size) and ext in PAYLOADS:
                    # the file's own bytes: the reader decodes them exactly as the in-memory loader does
                    yield Path(path).read_bytes(), ext, label, img
                else:  # resized (or a format the reader does not decode): the converted pixels, losslessly
                    yield _encode_png(img), "png", label, img

        return gen(), len(picks), names
    from distillab.data.prepare import _cached_source

    ds = _cached_source(source, data_dir)
    x, y = (ds.x_test, ds.y_test) if split == "test" else (ds.x_train, ds.y_train)
    picks = indices if indices is not None else list(range(len(y)))

    def gen_mem() -> Iterator[tuple[bytes, str, int, torch.Tensor]]:
        for i in picks:
            yield _encode_png(x[i]), "png", int(y[i]), x[i]

    return gen_mem(), len(picks), ds.classes


def pack(source: str, out: Path, **options: Any) -> dict[str, Any]:
    """:func:`_pack` into ``out``, which must be empty or new: pack never writes over anything (shards,
    a meta.json of the user's). A pack that fails or is interrupted removes the files it wrote."""
    import re

    _check_pack_options(**options)
    if out.exists() and not out.is_dir():
        raise UserError(f"data pack: {out} is a file; choose an empty (or new) folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"data pack: {out} is not empty; choose an empty (or new) folder")
    created = not out.exists()
    try:
        return _pack(source, out, **options)
    except BaseException:
        if out.is_dir():  # it was empty: every shard and meta.json in it is this call's
            for p in out.iterdir():
                if re.fullmatch(r"(train|val|test)-\d{6}\.tar|meta\.json", p.name) and p.is_file():
                    p.unlink()
            if created and not any(out.iterdir()):
                out.rmdir()
        raise


def _check_pack_options(*, shard_size: int = 10_000, val: int = 5000, seed: int = 0, image_size: int | None = None,
                        limit: int | None = None, **_: Any) -> None:
    """Refuse options ``data pack`` cannot honour, before anything is written."""
    if shard_size < 1 or val < 0 or (limit is not None and limit < 1):
        raise UserError("data pack: --shard-size and --limit must be positive, --val non-negative")
    if image_size is not None and not 4 <= image_size <= 4096:
        raise UserError(f"data pack: --image-size {image_size} must be between 4 and 4096 pixels")
    if not 0 <= seed < 2**32:
        raise UserError(f"data pack: --seed {seed} must be between 0 and 2**32 - 1")


def _pack(source: str, out: Path, *, shard_size: int = 10_000, val: int = 5000, seed: int = 0,
          data_dir: str | None = None, image_size: int | None = None, channels: int | None = None,
          limit: int | None = None) -> dict[str, Any]:
    """Write ``source`` as WebDataset shards in ``out`` (train / val / test splits); returns the
    metadata also written to ``out/meta.json``. ``val`` examples of the training split (seeded)
    become the validation split; ``limit`` keeps only the first ``limit`` training examples of a
    seeded shuffle (to measure scaling). An image folder keeps its images' size and channels unless
    ``image_size`` / ``channels`` convert them, as ``source: imagefolder:PATH`` reads it in memory."""
    from distillab.compat import require

    require("webdataset", "stream", "data pack")
    import webdataset as wds

    from distillab.data.splits import train_val_indices

    fmt = None
    if source.startswith("imagefolder:"):
        fmt = _folder_format(source, image_size, channels)
    elif image_size is not None or channels is not None:
        raise UserError(f"data pack: --image-size and --channels convert imagefolder:PATH sources; {source} is packed "
                        f"as it is")
    _, n_train, _ = _examples(source, "train", data_dir, fmt, None)
    out.mkdir(parents=True, exist_ok=True)
    tr, va = train_val_indices(n_train, val, seed) if val else (torch.randperm(
        n_train, generator=torch.Generator().manual_seed(seed)), torch.empty(0, dtype=torch.long))
    if limit is not None:  # a seeded random subset (train_val_indices returns the indices sorted)
        g = torch.Generator().manual_seed(seed + 1)
        tr = tr[torch.randperm(len(tr), generator=g)[:limit]]
    plan = {"train": sorted(tr.tolist()), "val": sorted(va.tolist()), "test": None}
    counts, shards, shard_counts, classes, shape = {}, {}, {}, None, None
    total, sq, pixels = None, None, 0
    for split, picks in plan.items():
        if split == "val" and not picks:
            continue
        examples, n, classes = _examples(source, split, data_dir, fmt, picks)
        with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
            for k, (raw, ext, label, img) in enumerate(examples):
                # key: the position in the packed split (what batch.index means, 0..n-1, e.g. for
                # CRD's memory bank); "src": the index in the source's split, for provenance
                src = picks[k] if picks is not None else k
                sink.write({"__key__": f"{k:09d}", ext: raw, "cls": str(label).encode(), "src": str(src).encode()})
                if split == "train":  # normalisation constants, accumulated without holding the data
                    f = img.double() / 255.0
                    s, q = f.sum(dim=(1, 2)), (f * f).sum(dim=(1, 2))
                    total, sq = (s, q) if total is None else (total + s, sq + q)
                    pixels += f.shape[1] * f.shape[2]
                    shape = list(img.shape)
        counts[split] = n
        shards[split] = sorted(p.name for p in out.glob(f"{split}-*.tar"))
        shard_counts[split] = [min(shard_size, n - i) for i in range(0, n, shard_size)]
    mean = total / pixels
    std = (sq / pixels - mean * mean).clamp_min(1e-6).sqrt()
    meta = {"source": source, "classes": classes, "shape": shape, "counts": counts, "shards": shards,
            "shard_counts": shard_counts,
            "mean": [round(v, 6) for v in mean.tolist()], "std": [round(v, 6) for v in std.tolist()],
            "seed": seed}
    (out / META).write_text(json.dumps(meta, indent=1))
    return meta


def _tar_members(path: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file of an uncompressed tar, in order. Python's ``tarfile``
    parses every header field by field, and ``data pack`` (webdataset's writer) gives each member a
    PAX header too: for tiny images that cost several times the decoding. Here a header is a few
    slices; PAX records are read only for a long ``path`` or a ``size``. Shards were checked with
    ``tarfile`` when their meta.json was read (shard_check); a file cut short since is an error."""
    with open(path, "rb") as f:
        pax: dict[bytes, bytes] = {}
        while True:
            head = f.read(512)
            if len(head) < 512 or head.count(0) == 512:  # end of archive (two zero blocks)
                return
            raw_size = head[124:136]
            try:
                size = (int.from_bytes(raw_size[1:], "big") if raw_size[0] & 0x80  # base-256 (huge members)
                        else int(raw_size.rstrip(b"\0 ").strip() or b"0", 8))
                size = int(pax.get(b"size", size))
            except ValueError:
                raise UserError(f"data webdataset: {path} is not a readable tar shard (changed since it was "
                                f"checked?); repack it with `distillab data pack`") from None
            kind = head[156:157]
            data = f.read(size)
            if len(data) < size:
                raise UserError(f"data webdataset: {path} is cut short; repack it with `distillab data pack`")
            f.seek(-size % 512, 1)  # members are padded to 512-byte blocks
            if kind in (b"x", b"g"):  # PAX records "LEN key=value\n" for the next member / all members
                if kind == b"x":
                    pax = dict(rec.partition(b" ")[2].split(b"=", 1) for rec in data.split(b"\n")
                               if b"=" in rec.partition(b" ")[2])
                continue
            if kind == b"L":  # GNU long name of the next member
                pax = {b"path": data.rstrip(b"\0")}
                continue
            if kind in (b"0", b"\0", b"7"):
                prefix = head[345:500].rstrip(b"\0") if head[257:263] == b"ustar\0" else b""  # POSIX only
                name = pax.get(b"path") or (prefix + b"/" if prefix else b"") + head[:100].rstrip(b"\0")
                yield name.decode("utf-8", "replace"), data
            pax = {}


def _tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """WebDataset samples of a shard: consecutive members sharing a key (the name up to its first
    dot), as ``(key, {extension: bytes})``."""
    key, sample = None, {}
    for name, data in _tar_members(path):
        k, _, ext = name.partition(".")
        if k != key:
            if sample:
                yield key, sample
            key, sample = k, {}
        sample[ext] = data
    if sample:
        yield key, sample


class _ShardStream(IterableDataset):
    """Examples ``(uint8 HWC image, label, index)`` of a list of shards: this rank's and this
    worker's share, in a (seed, epoch)-seeded shard order and shuffle buffer. The epoch lives in
    shared memory, so persistent DataLoader workers (started once, not once per epoch) see
    :meth:`StreamLoader.set_epoch`. A payload that does not decode is yielded as its error line."""

    def __init__(self, urls: list[str], seed: int, shuffle: bool, buffer: int, shard: tuple[int, int],
                 shape: tuple[int, int, int]) -> None:
        import multiprocessing

        self.urls, self.seed, self.shuffle, self.buffer, self.shard = urls, seed, shuffle, buffer, shard
        self.shape = shape  # (C, H, W) every decoded image is brought to
        self._epoch = multiprocessing.RawValue("q", 0)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info else (0, 1)
        rank, world = self.shard
        epoch = self.epoch
        # A rank always reads the same shards (so every rank knows how many full batches all ranks can
        # make); their order, the split among this rank's workers and the buffer change per epoch.
        urls = list(self.urls[rank::world])
        rng = random.Random(epoch_seed(self.seed, epoch, stream=4) + rank)
        if self.shuffle:
            rng.shuffle(urls)
        mine = urls[wid::workers]
        if not mine:
            return
        local = random.Random(epoch_seed(self.seed, epoch, stream=5) + 7919 * (rank * workers + wid))
        pool: list[tuple[Any, int, int]] = []
        try:
            yield from self._read(mine, local, pool)
        except UserError as e:  # a shard cut short since it was checked: one line, raised by the main process
            yield str(e)

    def _read(self, mine: list[str], local: random.Random, pool: list[tuple[Any, int, int]]) -> Iterator[Any]:
        from PIL import Image

        channels, size = self.shape[0], self.shape[-1]
        bad = (OSError, ValueError, SyntaxError, EOFError, KeyError, TypeError, Image.DecompressionBombError)
        for url in mine:
            for key, sample in _tar_samples(url):
                ext = next((e for e in PAYLOADS if e in sample), None)
                try:
                    img = _decode(sample[ext], channels, size, ext)
                    item = (img, int(sample["cls"]), int(key.rsplit("/", 1)[-1]))
                except bad as e:
                    # one line for the main process (raised there: an exception here would reach the user as
                    # a DataLoader worker traceback)
                    yield (f"data webdataset: {url}: example {key}'s {ext or 'image'} is not a readable image "
                           f"({type(e).__name__}); repack it with `distillab data pack`")
                    return
                if not self.shuffle:
                    yield item
                    continue
                pool.append(item)
                if len(pool) >= self.buffer:
                    j = local.randrange(len(pool))
                    pool[j], pool[-1] = pool[-1], pool[j]
                    yield pool.pop()
        local.shuffle(pool)
        yield from pool


def _collate(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | str:
    """One chunk: the images stacked once (NHWC → NCHW view), or the error line of a bad payload."""
    import numpy as np

    for it in items:
        if isinstance(it, str):
            return it
    xs, ys, idx = zip(*items, strict=True)
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2), torch.tensor(ys), torch.tensor(idx)


class StreamLoader:
    """Batches from shards on disk, with the in-memory loader's interface (a
    :class:`~distillab.data.batch.BatchSource` with ``set_epoch``)."""

    def __init__(self, root: Path, split: str, meta: dict[str, Any], batch_size: int, *, mean: torch.Tensor,
                 std: torch.Tensor, augment: AugmentConfig | None = None, shuffle: bool = False, seed: int = 0,
                 num_workers: int = 2, shard: tuple[int, int] = (0, 1), center_crop: int | None = None,
                 buffer: int = 2000, device: torch.device | str = "cpu") -> None:
        urls = [str(root / s) for s in meta["shards"][split]]
        self.n = meta["counts"][split]
        self.world = shard[1] if shuffle else 1  # evaluation: every rank reads everything
        self.local_batch = batch_size // self.world
        sizes = meta.get("shard_counts", {}).get(split) or [self.n / len(urls)] * len(urls)
        # examples the rank with the fewest can serve: every rank stops after that many full batches
        self._capacity = int(min(sum(sizes[r::self.world]) for r in range(self.world)))
        self.stream = _ShardStream(urls, seed, shuffle, buffer, shard if shuffle else (0, 1), tuple(meta["shape"]))
        self.workers = max(0, min(num_workers, len(urls)))
        self.augment, self.shuffle, self.seed, self.center_crop = augment, shuffle, seed, center_crop
        self.device = torch.device(device)
        self._scale, self._shift = normalizer(mean, std, self.device)
        self.epoch = 0
        self._loader: DataLoader | None = None

    @property
    def num_examples(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.stream.epoch = epoch

    def __len__(self) -> int:
        # Training: full global batches only, the same count on every rank (shards hold different
        # numbers of examples, and DDP needs every rank to step together).
        return self._capacity // self.local_batch if self.shuffle else -(-self.n // self.local_batch)

    def _rebatched(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Workers send chunks; batches are cut here, so every batch but an evaluation's last is
        full however the examples fall across workers."""
        if self._loader is None:  # workers start once and serve every epoch (set_epoch: shared memory)
            self._loader = DataLoader(self.stream, batch_size=min(256, self.local_batch), num_workers=self.workers,
                                      collate_fn=_collate, persistent_workers=self.workers > 0)
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        held = 0
        for chunk in self._loader:
            if isinstance(chunk, str):  # a payload that is not an image: one line, not a worker's traceback
                raise UserError(chunk)
            parts.append(chunk)
            held += len(chunk[1])
            while held >= self.local_batch:
                x, y, idx = (torch.cat(t) for t in zip(*parts, strict=True))
                yield x[:self.local_batch], y[:self.local_batch], idx[:self.local_batch]
                parts, held = (
                    [(x[self.local_batch :], y[self.local_batch :], idx[self.local_batch :])],
                    held - self.local_batch,
                )
        if held and not self.shuffle:
            x, y, idx = (torch.cat(t) for t in zip(*parts, strict=True))
            yield x, y, idx

    def __iter__(self) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        for i, (x, y, idx) in enumerate(self._rebatched()):
            if i == len(self):
                break
            xb = x.to(self.device).float() * self._scale - self._shift
            if self.augment is not None:
                xb = augment_batch(xb, self.augment, gen, -self._shift)
            elif self.center_crop is not None:
                xb = center_crop_batch(xb, self.center_crop)
            yield Batch(xb, y.to(self.device), idx.to(self.device))


def prepare_stream(cfg: Any, seed: int, order_seed: int | None, normalization: dict | None, device: Any) -> Any:
    """A :class:`~distillab.data.prepare.DataBundle` of stream loaders for ``webdataset:PATH``."""
    from distillab.compat import require
    from distillab.data.prepare import DataBundle
    from distillab.distributed import current

    require("webdataset", "stream", f"data.source {cfg.source}")  # before any run folder is written
    root = Path(cfg.source.split(":", 1)[1]).expanduser()
    meta = read_meta(root)
    for key in ("classes", "train_subset", "shots", "fraction", "resize", "steps_per_epoch"):
        if getattr(cfg, key) is not None:
            raise UserError(f"data.{key} is not supported for streaming sources: pack the data you want to train on "
                            f"(distillab data pack)")
    have_val = meta["counts"].get("val", 0)
    if cfg.val_size not in (0, have_val):
        raise UserError(f"data.val_size: {root} holds a validation split of {have_val} examples (set by `distillab "
                        f"data pack --val`); set data.val_size: {have_val} (or 0 for none)")
    norm = normalization or {"mean": meta["mean"], "std": meta["std"]}
    common = dict(mean=torch.tensor(norm["mean"]), std=torch.tensor(norm["std"]), num_workers=cfg.num_workers,
                  device=device)
    d = current()
    if d.enabled and cfg.batch_size % d.world:
        raise UserError(f"data.batch_size {cfg.batch_size} must be a multiple of the {d.world} processes")
    train = StreamLoader(root, "train", meta, cfg.batch_size, augment=cfg.augment, shuffle=True,
                         seed=seed if order_seed is None else order_seed, shard=(d.rank, d.world), **common)
    crop = cfg.augment.crop
    val = (StreamLoader(root, "val", meta, cfg.eval_batch_size, center_crop=crop, **common)
           if cfg.val_size and have_val else None)
    test = StreamLoader(root, "test", meta, cfg.eval_batch_size, center_crop=crop, **common)
    c, h, w = meta["shape"]
    shape = (c, crop, crop) if crop else (c, h, w)
    return DataBundle(train, val, test, len(meta["classes"]), shape, list(meta["classes"]),
                      tuple(norm["mean"]), tuple(norm["std"]))


def _describe(path: str) -> tuple[tuple[int, ...], int]:
    """(shape, classes) of packed shards, from ``meta.json`` alone (preflight reads no data)."""
    from distillab.compat import require

    require("webdataset", "stream", f"data.source webdataset:{path}")
    meta = read_meta(Path(path).expanduser())
    return tuple(meta["shape"]), len(meta["classes"])


@register_source("webdataset", stream=prepare_stream, describe=_describe)
def _webdataset(**_: Any) -> None:
    """WebDataset shards written by `distillab data pack`, streamed from disk by DataLoader workers"""
