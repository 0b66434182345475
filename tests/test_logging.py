"""Logs a user can watch: TensorBoard event files per run, periodic plain lines when output is not a
terminal, and --quiet."""

import io
from importlib import resources

import pytest
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


def test_study_eta_weighs_every_planned_run_by_its_work():
    """Issue #25: the live bar's ETA counts estimated work (epochs x size of every planned run,
    a third of a teacher's for its forward pass), advanced every batch — not runs of very different
    lengths; a finished run read back leaves the total."""
    from rich.console import Console

    from distillab.config import validate
    from distillab.recipes.plan import plan_study
    from distillab.engine.progress import RichProgress
    from distillab.models import create_model
    from distillab.profile import count_macs
    from distillab.recipes import RECIPES
    from distillab.recipes.study import run_weights

    cls, module = RECIPES["hinton"].config, RECIPES["hinton"].module
    cfg = validate(cls, {"recipe": "hinton", "data": {"source": "digits", "val_size": 200}, "seeds": [0],
                         "teacher": {"model": {"name": "mlp:256"}, "train": {"epochs": 4}},
                         "student": {"model": {"name": "mlp:16"}, "train": {"epochs": 2}}})
    import pathlib
    import tempfile

    w = run_weights(plan_study(cfg, module, pathlib.Path(tempfile.mkdtemp())))
    # digits are 1x8x8: the mult-adds of each model on one such image
    m_t, m_s = (count_macs(create_model(n, 10, 1, 8), (1, 8, 8)) for n in ("mlp:256", "mlp:16"))
    teacher, alone, distilled = (w[k] for k in sorted(w, key=lambda k: ("teacher" not in k, "distil" in k)))
    assert teacher / alone == pytest.approx(4 * m_t / (2 * m_s), rel=1e-3)
    assert distilled / alone == pytest.approx((m_s + m_t / 3) / m_s, rel=1e-3)
    # Mult-adds, not parameters: the demo's conv teacher (a quarter of its MLP student's parameters)
    # weighs more than the 6 student runs together, as it takes longer; a cached teacher costs nothing.
    demo = yaml.safe_load(resources.files("distillab.presets").joinpath("hinton-demo.yaml").read_text())
    w = run_weights(plan_study(validate(cls, demo), module, pathlib.Path(tempfile.mkdtemp())))
    t = sum(v for k, v in w.items() if k.startswith("teacher"))
    assert t > sum(w.values()) - t
    students = sorted(v for k, v in w.items() if not k.startswith("teacher"))
    assert students[0] == pytest.approx(students[-1])  # distilled from the cache = alone

    bar = RichProgress(3, Console(quiet=True))
    bar.set_weights({"a seed 0": 30.0, "b seed 0": 10.0, "c seed 0": 60.0})
    task = lambda: bar._p.tasks[0]  # noqa: E731
    bar.skip_run("a seed 0")  # read back: not progress
    assert task().total == 70.0 and task().completed == 0
    bar.begin_run("b seed 0")
    bar.start("epoch 1/2", 5)
    for _ in range(5):
        bar.advance(1, loss=1.0, samples=8)
    assert task().completed == pytest.approx(5.0)  # half of b's work after one of its two epochs
    bar.end_run()
    assert task().completed == 10.0 and task().description == "runs 1/2"
