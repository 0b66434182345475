"""Issue #25: messages a new user meets — did-you-mean, readable model names, hints, the lock."""

from __future__ import annotations

import pytest
import yaml

from distillab.cli import main


def _run(tmp_path, cfg, *extra):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out"), "--quiet", *extra])


@pytest.mark.parametrize("override, needle", [
    ("train.optim.learning_rate=0.1", "train.optim.learning_rate: unknown key; did you mean"),
    ("method.name=kdd", "unknown method 'kdd'; did you mean kd"),
    ("model.name=mpl:32", "model 'mpl:32' unknown; did you mean mlp:32?"),
    ("model.name=resnt20", "did you mean resnet20"),
    ("model.name=resnet18", "timm:resnet18 or torchvision:resnet18"),
    ("data.source=fashion_mnist", "did you mean fashion-mnist?"),
    ("data.source=imagefolde:x", "did you mean imagefolder:x?"),
])
def test_did_you_mean(override, needle, tmp_path, capsys, digits_train_cfg):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(digits_train_cfg))
    assert main(["run", str(tmp_path / "c.yaml"), override, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_model_patterns_are_readable(tmp_path, capsys, digits_train_cfg):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(digits_train_cfg))
    assert main(["run", str(tmp_path / "c.yaml"), "model.name=nope", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "resnetN[x4]" in err and "bit:RNxN" in err and "\\d" not in err and "(R" not in err


def test_api_key_typo_reads_well():
    from torch import nn

    import distillab

    with pytest.raises(distillab.UserError, match=r"^distill: kd\.temprature: unknown key; did you mean temperature\?"):
        distillab.distill(nn.Linear(2, 2), nn.Linear(2, 2), [(1, 2)], method="kd", temprature=3)


def test_teacher_role_folder_gets_a_hint(tmp_path, capsys, digits_train_cfg):
    assert _run(tmp_path, digits_train_cfg) == 0
    role = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    cfg = {**digits_train_cfg, "name": "kd", "method": {"name": "kd", "teacher": [str(role)]}}
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "k.yaml"), "--out", str(tmp_path / "kd")]) == 2
    err = capsys.readouterr().err
    assert "role folder holding the runs seed0" in err and str(role / "seed0") in err


def test_a_run_held_by_another_process_says_so(tmp_path, capsys, digits_train_cfg):
    from distillab.engine.run import RunLock

    assert _run(tmp_path, digits_train_cfg) == 0
    run_dir = next(p for p in (tmp_path / "out").iterdir() if p.is_dir()) / "seed0"
    (run_dir / "summary.json").unlink()  # unfinished again
    lock = RunLock(run_dir)  # another "process" trains it (flock: per open file, so this conflicts)
    try:
        assert _run(tmp_path, digits_train_cfg) == 2
        err = capsys.readouterr().err
        assert "being trained by another process (pid" in err and "--resume" not in err
    finally:
        lock.release()


def test_mismatched_torch_and_torchvision_is_one_line(monkeypatch, capsys, digits_train_cfg, tmp_path):
    from distillab import compat

    assert compat.pair_error("2.14.1", "0.29.1") is None
    msg = compat.pair_error("2.14.1", "0.28.0")
    assert "pip install 'torchvision==0.29.*'" in msg and "torch==2.13.*" in msg
    versions = {"torch": "2.14.1", "torchvision": "0.28.0"}
    monkeypatch.setattr(compat.metadata, "version", lambda name: versions[name])
    compat.check_torch_pair.cache_clear()
    try:
        assert _run(tmp_path, digits_train_cfg) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "do not match" in err[0]
    finally:
        compat.check_torch_pair.cache_clear()


def test_missing_extras_are_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, digits_train_cfg):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "webdataset" else real(name, *a))
    assert main(["data", "pack", "digits", str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: data pack needs webdataset, an optional extra: pip install 'distillab[stream]'"]
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "meta.json").write_text("{}")
    assert _run(tmp_path, {**digits_train_cfg, "data": {"source": f"webdataset:{tmp_path / 'shards'}"}}) == 2
    assert "pip install 'distillab[stream]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_tensorboard_is_said_once(tmp_path, capsys, monkeypatch, digits_train_cfg):
    import builtins

    from distillab import compat

    real = builtins.__import__

    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tb)
    monkeypatch.setattr(compat, "_SAID", set())
    assert _run(tmp_path, {**digits_train_cfg, "seeds": [0, 1]}) == 0
    err = capsys.readouterr().err
    assert err.count("tensorboard is not installed") == 1 and "distillab[tensorboard]" in err
    assert not list((tmp_path / "out").rglob("tb"))


def test_terminal_output_is_rendered_and_reuse_is_said(tmp_path, capsys, digits_train_cfg):
    import io

    from rich.console import Console

    from distillab.cli import run_config

    buf = io.StringIO()
    md = run_config(dict(digits_train_cfg), tmp_path / "out", Console(file=buf, force_terminal=True, width=120), "c",
                    quiet=True)
    assert md.startswith("### ") and "### " not in buf.getvalue() and "|---" not in buf.getvalue()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(digits_train_cfg))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]) == 0
    assert "reused 1 finished run from" in capsys.readouterr().out
