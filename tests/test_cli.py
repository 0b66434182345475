"""The command line: end-to-end runs on real data, report, profile, and one-line errors (exit 2)."""

import json
import subprocess
import sys

import pytest
import yaml

from distillab.cli import main


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_run_report_and_resume_skip(tmp_path, digits_train_cfg, capsys):
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "seeds=[0,1]"]) == 0
    run = out / "mlp" / "seed0"
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "model.safetensors"):
        assert (run / f).is_file(), f
    # A finished run drops its resume checkpoint unless --keep-checkpoints.
    assert not (run / "state.json").exists() and not list(run.glob("ckpt-*"))
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 0.5 and summary["params"] == 64 * 64 + 64 + 64 * 10 + 10
    assert (out / "results.md").is_file() and (out / "results.csv").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == 0 and saved["model"]["name"] == "mlp:64"  # the resolved config is kept

    # A second run finds the finished runs and does not retrain them.
    before = (run / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "seeds=[0,1]"]) == 0
    assert (run / "metrics.jsonl").stat().st_mtime_ns == before

    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mlp" in table and " ± " in table and "| 2 " in table  # one row, two seeds


def test_hinton_recipe_end_to_end_on_digits(tmp_path, capsys):
    cfg = {
        "recipe": "hinton", "seeds": [0],
        "data": {"source": "digits", "val_size": 200, "batch_size": 64},
        "teacher": {"model": {"name": "mlp:128-128", "kwargs": {"dropout": 0.2}}, "augment": {"jitter": 1},
                    "train": {"epochs": 3, "optim": {"lr": 0.05}}},
        "student": {"model": {"name": "mlp:32-32"}, "train": {"epochs": 3, "optim": {"lr": 0.05}}},
        "distill": {"temperature": 4, "alpha": 0.9},
    }
    out = tmp_path / "h"
    assert main(["run", str(_write(tmp_path / "h.yaml", cfg)), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    for row in ("Teacher (2x128", "Student alone (2x32", "Distilled student (2x32"):
        assert row in md
    kd_cfg = yaml.safe_load((out / "distilled" / "seed0" / "config.yaml").read_text())
    assert kd_cfg["method"]["name"] == "kd" and kd_cfg["method"]["teacher"] == [str(out / "teacher" / "seed0")]


def test_profile_prints_table5_columns(capsys):
    assert main(["profile", "mlp:1200-1200", "mlp:800-800", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    for col in ("# params", "# mult-adds", "speed-up", "compression"):
        assert col in out
    row = next(ln for ln in out.splitlines() if ln.startswith("| mlp:800-800"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1.28M" and cells[2] == "1.28M"  # 784*800 + 800*800 + 800*10 weights
    assert float(cells[6]) == pytest.approx(2395210 / 1276810, abs=0.01)


@pytest.mark.parametrize("override, field", [
    ("model.nmae=mlp:8", "model.nmae: unknown key"),
    ("train.epochs=many", "train.epochs"),
    ("train.optim.lr=-1", "train.optim.lr"),
    ("recipe=nope", "recipe"),
    ("data.source=imagenet42", "data.source"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, digits_train_cfg, capsys, override, field):
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), override]) == 2
    assert field in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in _error_line(capsys)


def test_missing_teacher_checkpoint(tmp_path, digits_train_cfg, capsys):
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    teacher = tmp_path / "no-such-run"
    rc = main(["run", str(cfg), "--out", str(tmp_path / "o"), "method.name=kd", f"method.teacher=[{teacher}]"])
    assert rc == 2 and "no-such-run" in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_teacher_with_other_class_count(tmp_path, digits_train_cfg, capsys):
    from distillab.engine.checkpoint import save_model
    from distillab.models import create_model

    save_model(tmp_path / "t5.safetensors", create_model("mlp:16", 5, 1, 8),
               {"name": "mlp:16", "kwargs": {}, "num_classes": 5, "in_chans": 1, "img_size": 8, "data": "x"})
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    rc = main(["run", str(cfg), "--out", str(tmp_path / "o"), "method.name=kd",
               f"method.teacher=[{tmp_path / 't5.safetensors'}]"])
    assert rc == 2 and "5 classes but the data has 10" in _error_line(capsys)


def test_existing_run_dir_with_other_config_is_not_overwritten(tmp_path, digits_train_cfg, capsys):
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out), "train.epochs=1"]) == 0
    run = out / "mlp" / "seed0"
    snapshot = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "train.epochs=2"]) == 2
    assert "different config" in _error_line(capsys)
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot


def test_corrupt_teacher_checkpoint(tmp_path, digits_train_cfg, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage")
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "method.name=kd", f"method.teacher=[{bad}]"]) == 2
    assert "bad.safetensors" in _error_line(capsys)


@pytest.mark.slow
def test_missing_data_exit_code_in_a_real_process(tmp_path, digits_train_cfg):
    cfg = dict(digits_train_cfg, data={"source": "mnist", "data_dir": str(tmp_path)})
    path = _write(tmp_path / "c.yaml", cfg)
    env = {"DISTILLAB_NO_DOWNLOAD": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "distillab", "run", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: data 'mnist' not found") and p.stderr.count("\n") == 1


def test_unfinished_run_needs_resume(tmp_path, digits_train_cfg, capsys):
    cfg = _write(tmp_path / "c.yaml", digits_train_cfg)
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    run = out / "mlp" / "seed0"
    final = (run / "model.safetensors").read_bytes()
    # What a kill after the last checkpoint but before the summary leaves behind:
    (run / "summary.json").unlink()
    (run / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    assert "--resume" in _error_line(capsys)
    assert main(["run", str(cfg), "--out", str(out), "--resume"]) == 0
    assert (run / "model.safetensors").read_bytes() == final
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_data_dir_reaches_every_data_section(tmp_path, capsys, no_data_anywhere):
    cfg = {"recipe": "scratch-vs-pretrained", "source": {"data": {"source": "mnist"}},
           "data": {"source": "mnist"}, "model": {"name": "cnn:4"}}
    path = _write(tmp_path / "c.yaml", cfg)
    (tmp_path / "mine").mkdir()
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "mine")]) == 2
    assert f"searched {tmp_path / 'mine'})" in _error_line(capsys)  # and nowhere else


def test_data_dir_with_an_init_section(tmp_path, digits_train_cfg, capsys):
    # --data-dir must reach data sections only: an ``init:`` section also has a ``source`` (a run
    # folder), and writing ``data_dir`` into it used to fail with "init.data_dir: unknown key".
    base = _write(tmp_path / "base.yaml", digits_train_cfg)
    assert main(["run", str(base), "--out", str(tmp_path / "base")]) == 0
    transfer = dict(digits_train_cfg, init={"source": str(tmp_path / "base" / "mlp" / "seed0"), "blocks": 1})
    path = _write(tmp_path / "t.yaml", transfer)
    mine = tmp_path / "mine"
    assert main(["run", str(path), "--out", str(tmp_path / "t"), "--data-dir", str(mine)]) == 0
    saved = yaml.safe_load((tmp_path / "t" / "mlp" / "seed0" / "config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(mine) and "data_dir" not in saved["init"]


def test_data_dir_with_self_referencing_yaml_is_a_clean_error(tmp_path, capsys):
    # A recursive alias used to send the raw-dictionary walk into a RecursionError.
    path = tmp_path / "c.yaml"
    path.write_text("recipe: train\ndata: {source: digits}\nmodel: {name: 'mlp:8', kwargs: {loop: &a [*a]}}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)]) == 2
    _error_line(capsys)


def test_keep_checkpoints(tmp_path, digits_train_cfg):
    cfg = _write(tmp_path / "c.yaml", dict(digits_train_cfg, train={"epochs": 2}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--keep-checkpoints"]) == 0
    run = tmp_path / "o" / "mlp" / "seed0"
    assert (run / "state.json").is_file() and len(list(run.glob("ckpt-*.safetensors"))) == 1
