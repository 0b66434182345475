"""A study's runs as a graph, trained in order here or fanned out as Ray tasks: the same folders,
weights and tables either way."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from distillab.cli import main
from distillab.config import validate
from distillab.recipes.plan import plan_study
from distillab.recipes import RECIPES

DATA = {"source": "digits", "val_size": 100, "batch_size": 64}
HINTON = {"recipe": "hinton", "data": DATA, "seeds": [0, 1],
          "teacher": {"model": {"name": "mlp:32"}, "train": {"epochs": 2}},
          "student": {"model": {"name": "mlp:16"}, "train": {"epochs": 2}}}


def test_plan_reads_the_graph_off_the_recipe(tmp_path):
    cls, module = RECIPES["hinton"].config, RECIPES["hinton"].module
    plan = plan_study(validate(cls, HINTON), module, tmp_path / "o")
    assert [(r.name, r.seed) for r in plan] == [(n, s) for s in (0, 1) for n in ("teacher", "student", "distilled")]
    distilled = plan[2]
    assert distilled.after == [0] and plan[1].after == []  # the distilled student waits for its teacher only
    assert distilled.spec.method.teacher == [str(tmp_path / "o" / "teacher" / "seed0")]
    assert distilled.run_dir == tmp_path / "o" / "distilled" / "seed0"
    assert not (tmp_path / "o").exists()  # planning trains and writes nothing


@pytest.mark.slow
def test_ray_executor_writes_what_the_local_executor_writes(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'distillab[ray]')")
    torch.set_num_threads(1)  # as each Ray task (1 CPU): identical float reductions, identical weights
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(HINTON))
    assert main(["run", str(path), "--out", str(tmp_path / "local"), "--quiet"]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # two runs at once on 2 cores
    try:
        assert main(["run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray", "--quiet"]) == 0
    finally:
        ray.shutdown()
        torch.set_num_threads(2)
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert (local / "results.md").read_text() == (remote / "results.md").read_text()
    runs = sorted(p.parent.relative_to(local) for p in local.rglob("model.safetensors"))
    assert len(runs) == 6 and runs == sorted(p.parent.relative_to(remote) for p in remote.rglob("model.safetensors"))
    for r in runs:
        a, b = load_file(str(local / r / "model.safetensors")), load_file(str(remote / r / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), r


def test_address_needs_the_ray_executor(tmp_path, capsys):
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(HINTON))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--address", "10.0.0.1:6379"]) == 2
    assert "--executor ray" in capsys.readouterr().err


def test_ray_executor_asks_for_resume_like_the_local_one(tmp_path, capsys):
    """An unfinished run is refused before any Ray task starts, unless --resume or --restart."""
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(HINTON))
    unfinished = tmp_path / "o" / "distilled" / "seed1"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text("recipe: hinton\n")  # started, no summary.json
    from distillab.engine.owned import write_marker

    write_marker(tmp_path / "o", "study")  # as distillab leaves a study it started
    write_marker(unfinished, "run")
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "distilled/seed1" in err and "--resume" in err and "Traceback" not in err
    assert (unfinished / "config.yaml").read_text() == "recipe: hinton\n"  # nothing on disk touched


@pytest.mark.slow
def test_a_failed_ray_run_ends_in_one_line_without_tracebacks(tmp_path):
    """Bad input found inside a Ray task: exit 2 and one line, not one traceback per waiting run."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is not installed (pip install 'distillab[ray]')")
    bad = {**HINTON, "data": {**DATA, "val_size": 10_000}}  # more validation images than digits has
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run([sys.executable, "-m", "distillab", "run", str(path), "--out", str(tmp_path / "o"),
                           "--executor", "ray", "--quiet"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "error: a run failed on Ray: data.val_size" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and 'File "' not in proc.stderr, proc.stderr  # Ray's "Unhandled error"s
