"""DDP under torchrun: 2 gloo processes on CPU with global batch B end where 1 process with batch
B ends (each rank trains on its half of every seeded global batch; gradients are averaged)."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

CFG = {"recipe": "train", "name": "r", "data": {"source": "digits", "val_size": 200, "batch_size": 64,
                                               "augment": {"jitter": 1}},
       "model": {"name": "mlp:64-64"}, "train": {"epochs": 3, "optim": {"lr": 0.05, "schedule": "cosine"}},
       "seeds": [0]}


def _run(tmp_path, out, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DISTILLAB_DEVICE": "cpu", "DISTILLAB_TENSORBOARD": "0"}
    env.pop("WORLD_SIZE", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
                str(29500 + os.getpid() % 1000 + nproc)] if nproc > 1 else [sys.executable]
    p = subprocess.run([*launcher, "-m", "distillab", "run", str(tmp_path / "c.yaml"), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CFG))
    _run(tmp_path, tmp_path / "one", 1)
    _run(tmp_path, tmp_path / "two", 2)
    a = load_file(str(tmp_path / "one" / "r" / "seed0" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "r" / "seed0" / "model.safetensors"))
    # Measured: max |Δw| = 6e-8 after 3 epochs (float summation order of the all-reduce); the bound is 1e-5.
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |w_2proc - w_1proc| = {worst:.2e}")
    assert worst < 1e-5, worst
    one = [json.loads(ln) for ln in (tmp_path / "one" / "r" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(ln) for ln in (tmp_path / "two" / "r" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in two] == [1, 2, 3]  # written once, by rank 0
    for r1, r2 in zip(one, two, strict=True):
        assert r2["train_ce"] == pytest.approx(r1["train_ce"], abs=1e-5)  # the loss curve, averaged over ranks
        assert r2["val_acc"] == pytest.approx(r1["val_acc"], abs=1e-9)
    s1 = json.loads((tmp_path / "one" / "r" / "seed0" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "r" / "seed0" / "summary.json").read_text())
    assert s2["test_acc"] == pytest.approx(s1["test_acc"], abs=1e-9)
    assert (tmp_path / "two" / "results.md").is_file()
