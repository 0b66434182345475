"""Registries by decorator: a user's model is usable by name (Python and YAML via --import), and
every method file registers itself — no central list to edit."""

import textwrap

import pytest
import torch
import yaml

from distillab.cli import main
from distillab.config import validate
from distillab.engine.run import RunSpec
from distillab.errors import UserError
from distillab.methods import METHODS
from distillab.models import MODELS, create_model


def test_builtin_families_resolve():
    assert {"mlp", "cnn", "resnet", "bit", "timm", "torchvision"} <= set(MODELS)
    assert create_model("resnet8x4", 10, 3, 32).blocks is not None
    assert create_model("mlp", 10, 1, 8)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # logistic regression
    with pytest.raises(UserError, match="unknown"):
        create_model("nosuchnet", 10)


def test_every_method_file_is_registered_and_selectable():
    from distillab import methods

    import pkgutil

    files = {m.name for m in pkgutil.iter_modules(methods.__path__)} - {"base", "registry", "features"}
    owners = {METHODS[n].objective.__module__.rsplit(".", 1)[1] for n in METHODS
              if METHODS[n].objective.__module__.startswith("distillab.methods.")}  # not users' own
    assert files == owners  # each method file registered at least one method
    for name, entry in METHODS.items():
        try:
            spec = validate(RunSpec, {"model": {"name": "mlp:4"}, "method": {"name": name}})
            assert isinstance(spec.method, entry.config)
        except UserError as e:  # a method with required keys (fitnet-hint): dispatched to its config
            assert f"method: {name}." in str(e)


def test_user_model_from_yaml_with_import(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "mymodels.py"
    pkg.write_text(textwrap.dedent('''
        from torch import nn
        from distillab.models import register_model
        from distillab.models.blocks import BlockNet

        @register_model("tiny-user-net")
        def tiny(num_classes, in_chans, img_size, hidden=16):
            """A user's own net: flatten, one hidden layer."""
            return BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size**2, hidden), nn.ReLU())],
                            nn.Linear(hidden, num_classes))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"recipe": "train", "name": "mine", "data": {"source": "digits", "val_size": 100},
           "model": {"name": "tiny-user-net", "kwargs": {"hidden": 32}}, "train": {"epochs": 2}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--import", "mymodels"]) == 0
    assert (out / "mine" / "seed0" / "model.safetensors").is_file()
    assert main(["list", "models", "--import", "mymodels"]) == 0
    assert "tiny-user-net" in capsys.readouterr().out
    assert main(["run", str(path), "--out", str(tmp_path / "o2"), "--import", "no_such_module_xyz"]) == 2


def test_help_lists_names_and_every_argument_has_help(capsys):
    import argparse

    from distillab.cli import build_parser

    parser = build_parser()
    text = parser.format_help()
    for name in ("benchmark", "hinton", "crd", "reviewkd", "mlp:ARG", "distillab list"):
        assert name in text
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd, p in sub.choices.items():
        assert p.epilog and "example:" in p.epilog, cmd
        for action in p._actions:
            assert action.help, f"{cmd} {action.dest} has no help text"


def test_a_users_method_from_yaml_with_import(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymethods.py").write_text(textwrap.dedent('''
        from typing import Literal

        import torch.nn.functional as F

        from distillab.config import Strict
        from distillab.methods import Objective, register_method


        class HalfCEConfig(Strict):
            name: Literal["half-ce"] = "half-ce"
            scale: float = 0.5


        @register_method(HalfCEConfig)
        class HalfCE(Objective):
            """Cross-entropy times a constant (a user's own method)."""

            def __init__(self, student, cfg):
                super().__init__(student)
                self.scale = cfg.scale

            def forward(self, batch, progress):
                return {"half_ce": self.scale * F.cross_entropy(self.student(batch.x), batch.y)}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"recipe": "train", "name": "mine", "data": {"source": "digits", "val_size": 100},
           "model": {"name": "mlp:16"}, "method": {"name": "half-ce", "scale": 0.25}, "train": {"epochs": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), "--import", "mymethods",
                 "--quiet"]) == 0
    saved = yaml.safe_load((tmp_path / "o" / "mine" / "seed0" / "config.yaml").read_text())
    assert saved["method"] == {"name": "half-ce", "scale": 0.25}
    assert "train_half_ce" in (tmp_path / "o" / "mine" / "seed0" / "metrics.jsonl").read_text()
