"""Every shipped config (and the demo preset) validates against its recipe, and its block
indices fit its models — so a full-scale config cannot fail only after hours on a GPU."""

from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import BaseModel

from distillab.config import ModelConfig, load_yaml, validate
from distillab.methods.fitnet import FitNetKDConfig
from distillab.methods.kd import KDConfig
from distillab.models import create_model
from distillab.recipes import RECIPES
from distillab.recipes.fitnets import FitNetsRecipe
from distillab.recipes.hinton import HintonRecipe
from distillab.config import TrainConfig
from distillab.recipes.plan import count_runs, plan_study
from distillab.methods.supervised import SupervisedConfig

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_config_is_valid(path):
    data = load_yaml(path)
    entry = RECIPES[data["recipe"]]
    cls = entry.config
    cfg = validate(cls, data, str(path))
    models = list(_models(cfg))
    assert models, "a study with no model"
    chans = 3 if "cifar" in str(path) or "imagefolder" in str(path) else 1
    with torch.device("meta"):  # every model name and its kwargs must build (no memory used)
        for m in models:
            assert create_model(m.name, 10, chans, 32, **m.kwargs) is not None, m.name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_the_plan_names_each_run_once(path, tmp_path, monkeypatch):
    # The progress bar, the time estimate and the Ray executor all rely on the plan: each run the
    # recipe asks for under its own name and seed (planning raises when n / hint / guided indices
    # do not fit the models), and count_runs is the plan's length.
    data = load_yaml(path)
    entry = RECIPES[data["recipe"]]
    cls, module = entry.config, entry.module
    cfg = validate(cls, data, str(path))
    if data["recipe"] == "bit":  # no dataset on disk needed: the rule's data/schedule are irrelevant here
        monkeypatch.setattr(module, "_downstream", lambda c, shots, seed: (
            c.downstream, TrainConfig(epochs=1), SupervisedConfig()))
    plan = plan_study(cfg, module, tmp_path / "out", provisional=True)
    names = [(r.name, r.seed) for r in plan]
    assert len(names) == count_runs(cfg, module) and len(set(names)) == len(names)
    # Every run belongs to a table seed or to the tuning pilot seed (a shared teacher or a pilot grid
    # runs at one seed only, so names x seeds no longer counts them: main's hinton config has both).
    pilot = getattr(getattr(cfg, "tune", None), "seed", None)
    assert {s for _, s in names} <= set(cfg.seeds) | {pilot}
    assert all({s for n, s in names if n == name} == set(cfg.seeds) for name in ("student", "distilled")
               if any(n == name for n, _ in names))
    assert all(max(r.after, default=-1) < i for i, r in enumerate(plan))  # inputs planned before their readers


def _models(cfg: BaseModel):
    """Every ModelConfig inside a validated config."""
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, ModelConfig):
                yield v
            elif isinstance(v, BaseModel):
                yield from _models(v)


def test_recipes_embed_the_method_configs():
    # One home per setting: a recipe's distillation section *is* the method's config, so its
    # defaults (and any key the method adds) cannot drift from the method's own.
    distill = HintonRecipe.model_fields["distill"].default
    assert isinstance(distill, KDConfig) and distill.temperature == KDConfig().temperature
    assert set(KDConfig.model_fields) <= set(type(distill).model_fields)
    assert FitNetsRecipe.model_fields["kd"].default == FitNetKDConfig()


def test_demo_preset_is_valid():
    data = yaml.safe_load(resources.files("distillab.presets").joinpath("hinton-demo.yaml").read_text())
    entry = RECIPES[data["recipe"]]
    cls, module = entry.config, entry.module
    assert count_runs(validate(cls, data), module) == 7  # one shared teacher, 3 seeds x 2 students


def test_long_tests_carry_the_slow_marker():
    # `pytest -m "not slow"` must be able to skip the long ones; undeclared markers are errors.
    import tomllib

    root = Path(__file__).parent.parent
    opts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in opts["addopts"] and any(m.startswith("slow:") for m in opts["markers"])
    long_ones = {"test_bit.py": "def test_bit_study_end_to_end", "test_concurrency.py": "def test_second_process",
                 "test_cli.py": "def test_missing_data_exit_code_in_a_real_process"}
    for name, head in long_ones.items():
        text = (root / "tests" / name).read_text()
        before = text[:text.index(head)].rstrip().splitlines()[-1]
        assert before == "@pytest.mark.slow", name
