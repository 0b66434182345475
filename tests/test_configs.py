"""Every shipped config (and the demo preset) validates against its recipe, and its block
indices fit its models — so a full-scale config cannot fail only after hours on a GPU."""

from importlib import resources
from pathlib import Path

import pytest
import yaml

from distillab.config import load_yaml, validate
from distillab.recipes import RECIPES

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_config_is_valid(path):
    data = load_yaml(path)
    cls, module = RECIPES[data["recipe"]]
    cfg = validate(cls, data, str(path))
    assert module.count_runs(cfg) >= 1  # also checks n / hint / guided ranges against the models


def test_demo_preset_is_valid():
    data = yaml.safe_load(resources.files("distillab.presets").joinpath("hinton-demo.yaml").read_text())
    cls, module = RECIPES[data["recipe"]]
    assert module.count_runs(validate(cls, data)) == 9
