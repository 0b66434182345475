"""Model zoo: every model exposes ordered ``blocks`` and a ``head``."""

from distillab.models.blocks import BlockNet, get_blocks, tap_features
from distillab.models.zoo import count_params, create_model

__all__ = ["BlockNet", "count_params", "create_model", "get_blocks", "tap_features"]
