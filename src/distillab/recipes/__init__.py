"""Recipes: one module per study, each with a config class, ``run`` and ``count_runs``.

``RECIPES`` maps the ``recipe:`` key of a YAML config to its module.
"""

from __future__ import annotations

from types import ModuleType

from distillab.recipes import benchmark, bit, born_again, fitnets, hinton, label_refinery, layer_transfer, scratch_vs_pretrain, train

RECIPES: dict[str, tuple[type, ModuleType]] = {
    "train": (train.TrainRecipe, train),
    "hinton": (hinton.HintonRecipe, hinton),
    "layer-transfer": (layer_transfer.LayerTransferRecipe, layer_transfer),
    "scratch-vs-pretrained": (scratch_vs_pretrain.ScratchVsPretrainRecipe, scratch_vs_pretrain),
    "fitnets": (fitnets.FitNetsRecipe, fitnets),
    "born-again": (born_again.BornAgainRecipe, born_again),
    "label-refinery": (label_refinery.LabelRefineryRecipe, label_refinery),
    "bit": (bit.BiTRecipe, bit),
    "benchmark": (benchmark.BenchmarkRecipe, benchmark),
}

__all__ = ["RECIPES"]
