"""From a :class:`~distillab.config.DataConfig` and a seed to ready-to-use loaders."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from distillab.config import DataConfig
from distillab.data.loader import BatchLoader
from distillab.data.sources import Dataset, load_source, resolve_source
from distillab.errors import UserError
from distillab.data.splits import class_split, few_shot_indices, subset_indices, train_val_indices


@dataclass
class DataBundle:
    """Loaders for one run plus what models need to know about the data."""

    train: BatchLoader
    val: BatchLoader | None
    test: BatchLoader
    num_classes: int
    shape: tuple[int, int, int]
    classes: list[str]
    # The normalisation every loader applies ((x/255 − mean) / std per channel), saved with each
    # trained model so transfer and distillation runs can reuse it.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def normalization(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


def _source_stats(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) over a source's *whole* training split, in chunks.

    Fixed per source: the same for every class half, subset, few-shot draw and seed, so a model
    pre-trained on one part of a source sees identically normalised inputs when it is transferred
    to another part (statistics of each run's own subset would shift them)."""
    cached = ds.__dict__.get("_norm_stats")  # computed once per loaded source
    if cached is not None:
        return cached
    x = ds.x_train
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), 8192):
        chunk = x[i:i + 8192].to(torch.float64) / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        sq += (chunk * chunk).sum(dim=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-6).sqrt().clamp_min(1e-3)
    stats = tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())
    object.__setattr__(ds, "_norm_stats", stats)
    return stats


@lru_cache(maxsize=4)
def _cached_source(name: str, data_dir: str | None, image_size: int | None = None,
                   channels: int | None = None) -> Dataset:
    # Recipes train many models on one dataset: read and decode the files once per process.
    return load_source(name, data_dir, image_size, channels)


def prepare_data(cfg: DataConfig, seed: int, device: torch.device | str = "cpu",
                 dataset: Dataset | None = None, order_seed: int | None = None,
                 normalization: dict[str, list[float]] | None = None) -> DataBundle:
    """Split, subset and wrap a dataset into train / val / test loaders for ``seed``; the training
    order and augmentation come from ``order_seed`` (default ``seed``), a run's own seed.

    Inputs are normalised with ``normalization`` ({"mean": [...], "std": [...]}, e.g. the one a
    transferred model was trained with), else with the source's fixed statistics."""
    if dataset is None:
        entry, _ = resolve_source(cfg.source)
        if entry.stream is not None:  # a streamed kind (webdataset:PATH): read batch by batch
            return entry.stream(cfg, seed, order_seed, normalization, device)
    ds = dataset if dataset is not None else _cached_source(cfg.source, cfg.data_dir, cfg.image_size, cfg.channels)
    if normalization is not None:
        mean_t, std_t = tuple(normalization["mean"]), tuple(normalization["std"])
        if len(mean_t) != ds.shape[0] or len(std_t) != ds.shape[0]:
            raise UserError(f"normalisation with {len(mean_t)} channels does not fit {cfg.source}'s "
                            f"{ds.shape[0]}-channel images")
    else:
        mean_t, std_t = _source_stats(ds)
    whole = ds
    if cfg.classes is not None:
        ds = class_split(ds, cfg.classes)
    if cfg.resize is not None and ds.shape[-1] != cfg.resize:
        ds = _resized(ds, cfg.resize)
    crop = cfg.augment.crop
    if crop is not None and crop > ds.shape[-1]:
        raise UserError(f"data.augment.crop: {crop} is larger than the {ds.shape[-1]}px images (set data.resize)")
    x, y = ds.x_train, ds.y_train
    val_loader = None
    if cfg.val_size:
        tr, va = train_val_indices(len(y), cfg.val_size, seed)
    else:
        tr, va = torch.arange(len(y)), None
    if cfg.train_subset is not None:
        tr = tr[subset_indices(y[tr], cfg.train_subset, seed)]
    if cfg.fraction is not None:
        tr = tr[subset_indices(y[tr], max(1, round(cfg.fraction * len(tr))), seed)]
    if cfg.shots is not None:
        tr = tr[few_shot_indices(y[tr], cfg.shots, seed)]
    xtr = x[tr]
    common = dict(mean=torch.tensor(mean_t), std=torch.tensor(std_t), device=device)
    from distillab.distributed import current

    d = current()
    if d.enabled and cfg.batch_size % d.world:
        raise UserError(f"data.batch_size {cfg.batch_size} must be a multiple of the {d.world} processes")
    train = BatchLoader(xtr, y[tr], cfg.batch_size, augment=cfg.augment, shuffle=True,
                        seed=seed if order_seed is None else order_seed, steps_per_epoch=cfg.steps_per_epoch,
                        shard=(d.rank, d.world), **common)
    x_eval, x_test = x, ds.x_test
    if crop is not None and cfg.eval_view == "resize" and ds.shape[-1] != crop:
        # BiT's evaluation: the whole image resized to the training crop's size, not a centre crop.
        split = class_split(whole, cfg.classes) if cfg.classes is not None else whole
        small = _resized(split, crop)
        x_eval, x_test = small.x_train, small.x_test
    else:
        common["center_crop"] = crop
    if va is not None:
        val_loader = BatchLoader(x_eval[va], y[va], cfg.eval_batch_size, **common)
    test = BatchLoader(x_test, ds.y_test, cfg.eval_batch_size, **common)
    shape = (ds.shape[0], crop, crop) if crop else ds.shape
    return DataBundle(train, val_loader, test, ds.num_classes, shape, ds.classes, mean_t, std_t)


def _resized(ds: Dataset, size: int) -> Dataset:
    """All images resized once (bilinear, antialiased), still uint8."""
    def go(x: torch.Tensor) -> torch.Tensor:
        out = [F.interpolate(x[i:i + 4096].float(), size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False) for i in range(0, len(x), 4096)]
        return torch.cat(out).round().clamp(0, 255).to(torch.uint8)

    return dataclasses.replace(ds, x_train=go(ds.x_train), x_test=go(ds.x_test))
