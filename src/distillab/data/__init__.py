"""Data: named sources held in memory, seeded splits and a batch-augmenting loader."""

from distillab.data.batch import Batch, BatchSource, as_batch
from distillab.data.loader import BatchLoader, augment_batch, shift_batch
from distillab.data.prepare import DataBundle, prepare_data
from distillab.data.sources import SOURCES, Dataset, load_source, register_source
from distillab.registry import import_submodules

import_submodules(__name__, __path__)  # every module registering a source kind (streaming: webdataset)

__all__ = [
    "Batch",
    "BatchSource",
    "as_batch",
    "BatchLoader",
    "DataBundle",
    "Dataset",
    "SOURCES",
    "augment_batch",
    "load_source",
    "register_source",
    "prepare_data",
    "shift_batch",
]
