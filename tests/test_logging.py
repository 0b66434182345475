"""Logs a user can watch: TensorBoard event files per run, periodic plain lines when output is not a
terminal, and --quiet."""

import io

import yaml
from rich.console import Console

from distillab.cli import main
from distillab.engine.progress import PlainProgress, RichProgress, make_progress


def test_tensorboard_events_read_back(tmp_path, digits_train_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dict(digits_train_cfg, train={"epochs": 3})))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    acc = EventAccumulator(str(tmp_path / "o" / "mlp" / "seed0" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/ce", "val/acc", "val/loss", "opt/lr", "opt/samples_per_s"} <= tags
    val = [e.value for e in acc.Scalars("val/acc")]
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2, 3] and all(0.5 < v <= 1 for v in val)
    assert all(e.value > 0 for e in acc.Scalars("opt/samples_per_s"))


def test_plain_lines_when_not_a_terminal():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False)
    progress = make_progress(3, console)
    assert isinstance(progress, PlainProgress)
    progress.interval = 0.0  # every batch, for the test
    progress.begin_run("teacher seed 0")
    progress.start("epoch 1/2", 10)
    for _ in range(3):
        progress.advance(1, loss=0.5, samples=64)
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 3 and "teacher seed 0" in lines[-1] and "batch 3/10" in lines[-1]
    assert "loss 0.5000" in lines[-1] and "samples/s" in lines[-1] and "ETA" in lines[-1]
    assert isinstance(make_progress(3, Console(file=io.StringIO(), force_terminal=True)), RichProgress)


def test_quiet_prints_only_the_table(tmp_path, digits_train_cfg, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(digits_train_cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| run" in out and "test acc" in out and "seed 0:" not in out and "→" not in out
