"""Two processes never train one run: the run folder is claimed with an OS lock (fcntl.flock)."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from distillab.cli import main


@pytest.mark.slow
def test_second_process_on_one_run_folder_is_refused(tmp_path, capsys):
    cfg = {"recipe": "train", "name": "r", "data": {"source": "digits", "val_size": 200, "batch_size": 32},
           "model": {"name": "mlp:256-256"}, "train": {"epochs": 40, "optim": {"lr": 0.02}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILLAB_TENSORBOARD": "0"}
    first = subprocess.Popen([sys.executable, "-m", "distillab", "run", str(path), "--out", str(out), "--quiet"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = out / "r" / "seed0"
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
        assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() is not None else ""
        time.sleep(0.05)
    # The first process is training: a second one (even with --resume) must not train the folder.
    code = main(["run", str(path), "--out", str(out), "--resume", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "being trained by another process" in err and str(first.pid) in err
    assert first.wait(timeout=300) == 0
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 41))  # trained once: every epoch written exactly once
    assert not list(run.glob("*.tmp"))
    # Once the first has finished, the same command reads the finished run back.
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
