"""From a :class:`~distillab.config.DataConfig` and a seed to ready-to-use loaders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from distillab.config import DataConfig
from distillab.data.loader import BatchLoader
from distillab.data.sources import Dataset, load_source
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
    train = BatchLoader(xtr, y[tr], cfg.batch_size, augment=cfg.augment, shuffle=True, seed=seed, **common)
    if va is not None:
        val_loader = BatchLoader(x[va], y[va], cfg.eval_batch_size, **common)
    test = BatchLoader(ds.x_test, ds.y_test, cfg.eval_batch_size, **common)
    return DataBundle(train, val_loader, test, ds.num_classes, ds.shape, ds.classes)
