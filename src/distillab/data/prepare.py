"""From a :class:`~distillab.config.DataConfig` and a seed to ready-to-use loaders."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from distillab.config import DataConfig
from distillab.data.loader import BatchLoader
from distillab.data.sources import Dataset, load_source
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


@lru_cache(maxsize=4)
def _cached_source(name: str, data_dir: str | None, image_size: int) -> Dataset:
    # Recipes train many models on one dataset: read and decode the files once per process.
    return load_source(name, data_dir, image_size)


def prepare_data(cfg: DataConfig, seed: int, device: torch.device | str = "cpu",
                 dataset: Dataset | None = None) -> DataBundle:
    """Split, subset and wrap a dataset into train / val / test loaders for ``seed``."""
    ds = dataset if dataset is not None else _cached_source(cfg.source, cfg.data_dir, cfg.image_size)
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
    # Normalisation statistics come from the training part only.
    xf = xtr.float() / 255.0
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
    common = dict(mean=mean, std=std, device=device)
    from distillab.engine.distributed import current

    d = current()
    if d.enabled and cfg.batch_size % d.world:
        raise UserError(f"data.batch_size {cfg.batch_size} must be a multiple of the {d.world} processes")
    train = BatchLoader(xtr, y[tr], cfg.batch_size, augment=cfg.augment, shuffle=True, seed=seed,
                        shard=(d.rank, d.world), **common)
    common["center_crop"] = crop
    if va is not None:
        val_loader = BatchLoader(x[va], y[va], cfg.eval_batch_size, **common)
    test = BatchLoader(ds.x_test, ds.y_test, cfg.eval_batch_size, **common)
    shape = (ds.shape[0], crop, crop) if crop else ds.shape
    return DataBundle(train, val_loader, test, ds.num_classes, shape, ds.classes)


def _resized(ds: Dataset, size: int) -> Dataset:
    """All images resized once (bilinear, antialiased), still uint8."""
    def go(x: torch.Tensor) -> torch.Tensor:
        out = [F.interpolate(x[i:i + 4096].float(), size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False) for i in range(0, len(x), 4096)]
        return torch.cat(out).round().clamp(0, 255).to(torch.uint8)

    return dataclasses.replace(ds, x_train=go(ds.x_train), x_test=go(ds.x_test))
