"""Model zoo: every model exposes ordered ``blocks`` and a ``head``."""

from distillab.models.blocks import BlockNet, forward_to_block, get_blocks, tap_features
from distillab.models.registry import MODELS, register_model
from distillab.models.zoo import count_params, create_model, num_blocks

__all__ = ["BlockNet", "forward_to_block", "count_params", "create_model", "get_blocks", "num_blocks", "tap_features",
           "MODELS", "register_model"]
