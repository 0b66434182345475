"""Hostile soft-label caches (issue #24, class 3): a cache is used only when its manifest — key,
shapes, dtypes, sizes, a checksum of each file — matches what is on disk; anything else is rebuilt
(and the summary says why), never trained from silently and never a traceback. A full disk during
a build is a one-line error with nothing left behind; a killed build's temporary folder is removed
by the next build."""

from __future__ import annotations

import errno
import json
import os
import socket

import numpy as np
import pytest
import torch
import yaml

from distillab.cli import main
from distillab.config import AugmentConfig, DataConfig
from distillab.data import prepare_data
from distillab.engine import soft_labels
from distillab.engine.checkpoint import load_model
from distillab.engine.run_folder import file_digest as _file_digest
from distillab.engine.soft_labels import SoftLabelCacheConfig, open_cache
from distillab.errors import UserError
from distillab.methods.base import Teacher

DATA = {"source": "digits", "val_size": 100, "batch_size": 64}


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = {"recipe": "train", "name": "t", "data": DATA, "model": {"name": "mlp:32"},
           "train": {"epochs": 2, "optim": {"lr": 0.1}}, "seeds": [0]}
    (tmp / "t.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp / "t.yaml"), "--out", str(tmp / "o"), "--quiet"]) == 0
    return tmp / "o" / "t" / "seed0"


@pytest.fixture(scope="module")
def data():
    return prepare_data(DataConfig(**DATA, augment=AugmentConfig(jitter=1)), 0)


def _open(tmp_path, teacher_run, data, top_k=3, views=2):
    cfg = SoftLabelCacheConfig(views=views, top_k=top_k, dir=str(tmp_path / "cache"))
    members = [load_model(teacher_run)]
    return open_cache(cfg, [str(teacher_run)], [_file_digest(teacher_run)], data.train,
                      lambda paths: Teacher(members), torch.device("cpu"))


def _all_labels(cached, n, views):
    idx = torch.arange(n).repeat(views)
    view = torch.arange(views).repeat_interleave(n)
    return cached.lookup(idx, view)


def _zero_logp(f):
    arr = np.load(f / "logp.npy", mmap_mode="r+")
    arr[:] = 0
    arr.flush()
def _truncate_logp(f):
    with open(f / "logp.npy", "r+b") as h:
        h.truncate(200)
def _garbage_meta(f):
    (f / "meta.json").write_text("{not json")
def _meta_list(f):
    (f / "meta.json").write_text("[]")
def _other_view_seed(f):
    m = json.loads((f / "meta.json").read_text())
    m["view_seed"] += 1
    (f / "meta.json").write_text(json.dumps(m))
def _no_view_seed(f):
    m = json.loads((f / "meta.json").read_text())
    del m["view_seed"]
    (f / "meta.json").write_text(json.dumps(m))
def _lying_top_k(f):
    m = json.loads((f / "meta.json").read_text())
    m["top_k"] = 10
    (f / "meta.json").write_text(json.dumps(m))
def _fewer_views(f):
    m = json.loads((f / "meta.json").read_text())
    m["views"] = 1
    (f / "meta.json").write_text(json.dumps(m))
def _missing_idx(f):
    (f / "idx.npy").unlink()
def _idx_out_of_range(f):
    arr = np.load(f / "idx.npy", mmap_mode="r+")
    arr[0, 0, 0, 0] = 30000
    arr.flush()
def _idx_swapped_for_logp(f):
    (f / "idx.npy").write_bytes((f / "logp.npy").read_bytes())
def _old_format(f):  # a cache of the first format: meta.json without a manifest
    m = json.loads((f / "meta.json").read_text())
    m.pop("files")
    m["format"] = 1
    (f / "meta.json").write_text(json.dumps(m))
def _only_meta(f):
    for p in f.glob("*.npy"):
        p.unlink()
def _bad_header(f):
    with open(f / "logp.npy", "r+b") as h:
        h.write(b"\x00" * 16)
def _meta_not_utf8(f):
    (f / "meta.json").write_bytes(b"\xff\xfe\x00")


CORRUPTIONS = [_zero_logp, _truncate_logp, _garbage_meta, _meta_list, _other_view_seed, _no_view_seed,
               _lying_top_k, _fewer_views, _missing_idx, _idx_out_of_range, _idx_swapped_for_logp, _old_format,
               _only_meta, _bad_header, _meta_not_utf8]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_cache_is_rebuilt_never_trusted(tmp_path, teacher_run, data, corrupt, capsys):
    cached, rec = _open(tmp_path, teacher_run, data)
    n = len(data.train.y)
    want = _all_labels(cached, n, 2).clone()
    folder = tmp_path / "cache" / rec["key"]
    del cached  # release the memory map before damaging the files
    corrupt(folder)
    again, rec2 = _open(tmp_path, teacher_run, data)
    assert not rec2["hit"] and rec2["rebuilt_because"], rec2
    assert "rebuilding" in capsys.readouterr().err
    assert torch.equal(_all_labels(again, n, 2), want)  # the same labels as the clean cache
    _, rec3 = _open(tmp_path, teacher_run, data)
    assert rec3["hit"]  # and the rebuilt one is valid


def test_a_cache_folder_holding_foreign_files_is_refused_not_deleted(tmp_path, teacher_run, data):
    cached, rec = _open(tmp_path, teacher_run, data)
    folder = tmp_path / "cache" / rec["key"]
    del cached
    _garbage_meta(folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        _open(tmp_path, teacher_run, data)
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_full_disk_during_the_build_is_one_error_and_leaves_nothing(tmp_path, teacher_run, data, monkeypatch):
    real, written = soft_labels._NpyWriter._write, {"n": 0}

    def fill_up(self, chunk):
        written["n"] += len(chunk)
        if written["n"] > 4000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, chunk)

    monkeypatch.setattr(soft_labels._NpyWriter, "_write", fill_up)
    with pytest.raises(UserError, match="disk is full"):
        _open(tmp_path, teacher_run, data)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(soft_labels._NpyWriter, "_write", real)
    assert not _open(tmp_path, teacher_run, data)[1]["hit"]


def test_a_killed_builds_temporary_folder_is_removed_by_the_next_build(tmp_path, teacher_run, data):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f"{'a' * 24}.tmp-{socket.gethostname()}-{dead}-0123abcd"
    stale.mkdir()
    (stale / "logp.npy").write_bytes(b"\x00" * 1000)
    alive = tmp_path / "cache" / f"{'b' * 24}.tmp-{socket.gethostname()}-{os.getpid()}-0123abcd"
    alive.mkdir()  # a build still running (this process): left alone
    _open(tmp_path, teacher_run, data)
    assert not stale.exists() and alive.exists()


def test_a_student_never_trains_from_a_zeroed_cache(tmp_path, teacher_run, capsys):
    """End to end: the zeroed log-prob file that once trained silently to a worse accuracy."""
    cfg = {"recipe": "train", "name": "s", "data": {**DATA, "augment": {"jitter": 1}}, "model": {"name": "mlp:16"},
           "train": {"epochs": 1, "optim": {"lr": 0.1}}, "seeds": [0],
           "method": {"name": "kd", "teacher": [str(teacher_run)], "cache": {"views": 2, "dir": str(tmp_path / "c")}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    clean = json.loads((tmp_path / "a" / "s" / "seed0" / "summary.json").read_text())
    _zero_logp(next(p for p in (tmp_path / "c").iterdir() if p.is_dir()))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    again = json.loads((tmp_path / "b" / "s" / "seed0" / "summary.json").read_text())
    assert "checksum" in again["soft_label_cache"]["rebuilt_because"]
    assert again["test_acc"] == clean["test_acc"]
