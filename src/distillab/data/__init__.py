"""Data: named sources held in memory, seeded splits and a batch-augmenting loader."""

from distillab.data.batch import Batch, BatchSource, as_batch
from distillab.data.loader import BatchLoader, augment_batch, shift_batch
from distillab.data.prepare import DataBundle, prepare_data
from distillab.data.sources import SOURCES, Dataset, load_source

__all__ = ["Batch", "BatchSource", "as_batch", "BatchLoader", "DataBundle", "Dataset", "SOURCES", "augment_batch", "load_source",
           "prepare_data", "shift_batch"]
