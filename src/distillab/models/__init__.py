"""Model zoo: every model exposes ordered ``blocks`` and a ``head``."""

from distillab.models.blocks import BlockNet, forward_to_block, get_blocks, tap_features
from distillab.models.registry import MODELS, register_model
from distillab.models.zoo import count_params, create_model, num_blocks
from distillab.registry import import_submodules

import_submodules(__name__, __path__)  # every family file registers itself (@register_model)

__all__ = ["BlockNet", "forward_to_block", "count_params", "create_model", "get_blocks", "num_blocks", "tap_features",
           "MODELS", "register_model"]
