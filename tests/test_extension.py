"""Each addition is one file: a source, a model, a method and a recipe registered from a user's
module (``--import``) work in a config like built-in ones; and the layers import one way."""

import ast
import textwrap
from pathlib import Path

import pytest
import yaml

from distillab.cli import main

SRC = Path(__file__).parent.parent / "src" / "distillab"

USER_MODULE = '''
"""A user's own source, model, method and recipe, in one file outside the package."""
from pathlib import Path
from typing import Literal

import torch.nn.functional as F
from torch import nn

import distillab
from distillab.config import DataConfig, ModelConfig, Seeds, Strict, TrainConfig
from distillab.data.sources import Dataset, load_source
from distillab.engine.run import RunSpec
from distillab.methods import Objective
from distillab.models.blocks import BlockNet


@distillab.register_source("user-digits")
def user_digits(data_dir=None, image_size=32, **_):
    """the digits, first 600 training images (a user's loader)"""
    d = load_source("digits")
    return Dataset("user-digits", d.x_train[:600], d.y_train[:600], d.x_test, d.y_test, d.classes)


@distillab.register_model("user-net")
def user_net(num_classes, in_chans, img_size, hidden=16):
    """a user's net: flatten, one hidden layer"""
    return BlockNet([nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size**2, hidden), nn.ReLU())],
                    nn.Linear(hidden, num_classes))


class UserCEConfig(Strict):
    name: Literal["user-ce"] = "user-ce"
    weight: float = 1.0


@distillab.register_method(UserCEConfig)
class UserCE(Objective):
    """a user's loss: weighted cross-entropy"""

    def __init__(self, student, cfg):
        super().__init__(student)
        self.weight = cfg.weight

    def forward(self, batch, progress):
        return {"user_ce": self.weight * F.cross_entropy(self.student(batch.x), batch.y)}


class UserStudy(Strict):
    recipe: Literal["user-study"] = "user-study"
    data: DataConfig
    model: ModelConfig
    method: dict
    train: TrainConfig = TrainConfig()
    seeds: Seeds = [0]


@distillab.register_recipe(UserStudy)
def run(cfg, out: Path, study) -> str:
    """Recipe ``user-study``: one run per seed of the user's method."""
    spec = RunSpec.model_validate({"data": cfg.data.model_dump(), "model": cfg.model.model_dump(),
                                   "method": cfg.method, "train": cfg.train.model_dump()})
    runs = [study.run("mine", spec, s) for s in cfg.seeds]
    rows = [[f"{100 * r['test_acc']:.2f}"] for r in runs]
    return study.write_table("results", "user study", ["test acc (%)"], rows)
'''


def test_a_user_module_adds_a_source_model_method_and_recipe(tmp_path, monkeypatch, capsys):
    (tmp_path / "user_ext.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"recipe": "user-study", "data": {"source": "user-digits", "val_size": 100},
           "model": {"name": "user-net", "kwargs": {"hidden": 24}},
           "method": {"name": "user-ce", "weight": 0.5}, "train": {"epochs": 2}, "seeds": [0, 1]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--import", "user_ext"]) == 0, capsys.readouterr().err
    assert (out / "mine" / "seed1" / "model.safetensors").is_file() and (out / "results.md").is_file()
    saved = yaml.safe_load((out / "mine" / "seed0" / "config.yaml").read_text())
    assert saved["data"]["source"] == "user-digits" and saved["method"]["name"] == "user-ce"
    assert "user_ce" in (out / "mine" / "seed0" / "metrics.jsonl").read_text()
    for kind, name in (("sources", "user-digits"), ("models", "user-net"), ("methods", "user-ce"),
                       ("recipes", "user-study")):
        capsys.readouterr()
        assert main(["list", kind, "--import", "user_ext"]) == 0
        assert name in capsys.readouterr().out, kind


def test_unknown_names_say_what_is_known():
    from distillab.errors import UserError
    from distillab.recipes import RECIPES

    with pytest.raises(UserError, match=r"recipe 'hintn' unknown; did you mean hinton\? \(known: .*train"):
        RECIPES.get_entry("hintn")
    assert "hinton" in RECIPES.list("h*") and RECIPES.builtin("hinton")


def test_re_registration_by_another_module_warns():
    from distillab.registry import Registry

    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, "pkg.one")
    reg.add("a", 2, "pkg.one")  # the same module again (a re-import): silent
    with pytest.warns(UserWarning, match="thing 'a' registered by pkg.one is replaced by pkg.two"):
        reg.add("a", 3, "pkg.two")
    assert reg["a"] == 3 and reg.list(module="pkg.two") == ["a"]


def _imports(path: Path) -> set[str]:
    """Every distillab module a file imports (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("distillab")}


@pytest.mark.parametrize("files, forbidden", [
    (["api.py"], "distillab.cli"),
    ([str(p.relative_to(SRC)) for p in (SRC / "engine").glob("*.py")], "distillab.recipes"),
    ([str(p.relative_to(SRC)) for p in (SRC / "data").glob("*.py")], "distillab.engine"),
], ids=["api-not-cli", "engine-not-recipes", "data-not-engine"])
def test_layers_import_one_way(files, forbidden):
    assert files
    bad = {f: sorted(n for n in _imports(SRC / f) if n == forbidden or n.startswith(forbidden + "."))
           for f in files}
    assert not {f: v for f, v in bad.items() if v}


def test_a_callback_state_survives_a_resume(tmp_path):
    # Lightning's shape: named hooks, and state_dict / load_state_dict saved with the checkpoint.
    import torch
    from torch import nn

    from distillab.config import OptimConfig, TrainConfig
    from distillab.data.loader import BatchLoader
    from distillab.engine.callbacks import Callback
    from distillab.engine.trainer import Trainer
    from distillab.methods.supervised import Supervised, SupervisedConfig

    class Counter(Callback):
        def __init__(self) -> None:
            self.epochs, self.calls = 0, []

        def on_fit_start(self, trainer):
            self.calls.append("fit_start")

        def on_epoch_end(self, trainer, record):
            self.epochs += 1
            self.calls.append(record["epoch"])

        def on_fit_end(self, trainer):
            self.calls.append("fit_end")

        def state_dict(self):
            return {"epochs": self.epochs}

        def load_state_dict(self, state):
            self.epochs = state["epochs"]

    class Stop(Exception):
        pass

    def stop_after_2(record):
        if record["epoch"] == 2:
            raise Stop

    torch.manual_seed(0)
    x, y = torch.randint(0, 255, (64, 1, 4, 4), dtype=torch.uint8), torch.randint(0, 3, (64,))
    loader = BatchLoader(x, y, 16, shuffle=True, seed=0, mean=torch.tensor([0.5]), std=torch.tensor([0.25]))
    cfg = TrainConfig(epochs=3, optim=OptimConfig(lr=0.1), checkpoint_every=1)
    first = Counter()
    obj = Supervised(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), SupervisedConfig())
    with pytest.raises(Stop):
        Trainer(obj, loader, cfg, tmp_path, seed=0, callbacks=[first], on_epoch=stop_after_2,
                tensorboard=False).fit()
    assert first.calls == ["fit_start", 1, 2, "fit_end"]  # fit_end also after an error
    again = Counter()
    obj = Supervised(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), SupervisedConfig())
    Trainer(obj, loader, cfg, tmp_path, seed=0, callbacks=[again], tensorboard=False).fit()
    assert again.epochs == 3 and again.calls == ["fit_start", 3, "fit_end"]  # 2 restored + the third


def test_one_teacher_interface_live_and_cached():
    import torch
    from torch import nn

    from distillab.data.batch import Batch
    from distillab.errors import UserError
    from distillab.methods import BaseTeacher, Teacher

    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    batch = Batch(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
    one, two = Teacher(a), Teacher([a, b])
    assert isinstance(one, BaseTeacher) and one.single() is a
    assert torch.equal(two.soft_targets(batch, 2.0), two.probs(batch.x, 2.0))
    with pytest.raises(UserError, match="at: needs exactly one teacher"):
        two.single("at")
    from distillab.engine.soft_labels import CachedTeacher

    assert issubclass(CachedTeacher, BaseTeacher) and not issubclass(CachedTeacher, Teacher)
