"""The soft-label cache: stored teacher outputs equal the live ones on the rebuilt crops, a changed
teacher or augmentation builds a new cache, and KD, Born-Again and Label Refinery train from it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from distillab.cli import main
from distillab.config import AugmentConfig, DataConfig
from distillab.data import prepare_data
from distillab.data.loader import KeyedRandom
from distillab.engine.checkpoint import load_model
from distillab.engine.run_folder import file_digest as _file_digest
from distillab.engine.soft_labels import SoftLabelCacheConfig, open_cache
from distillab.methods.base import Teacher
from distillab.models import create_model

DATA = {"source": "digits", "val_size": 100, "batch_size": 64}


def _write(tmp_path, name, cfg):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = {"recipe": "train", "name": "t", "data": DATA, "model": {"name": "cnn:8-16"},
           "train": {"epochs": 6, "optim": {"lr": 0.1}}, "seeds": [0]}
    assert main(["run", _write(tmp, "t", cfg), "--out", str(tmp / "o"), "--quiet"]) == 0
    return tmp / "o" / "t" / "seed0"


def test_keyed_random_is_a_function_of_seed_index_view():
    idx, view = torch.tensor([3, 7, 3]), torch.tensor([0, 0, 1])
    a, b = KeyedRandom(5, idx, view), KeyedRandom(5, idx.flip(0), view.flip(0))
    ra, rb = a.rand(3), b.rand(3)
    assert torch.equal(ra, rb.flip(0))  # per example, whatever else is in the batch
    assert ra[0] != ra[2] and 0 <= ra.min() and ra.max() < 1  # another view, another draw
    assert not torch.equal(KeyedRandom(6, idx, view).rand(3), ra) and not torch.equal(a.rand(3), ra)


@pytest.mark.parametrize("top_k", [None, 3])
def test_cached_soft_labels_equal_the_live_teacher_on_the_rebuilt_crops(tmp_path, teacher_run, top_k):
    data = prepare_data(DataConfig(**DATA, augment=AugmentConfig(jitter=1, hflip=True)), 0)
    members = [load_model(teacher_run)]
    cfg = SoftLabelCacheConfig(views=3, top_k=top_k, dir=str(tmp_path / "cache"))
    cached, rec = open_cache(cfg, [str(teacher_run)], [_file_digest(teacher_run)], data.train,
                             lambda paths: Teacher(members), torch.device("cpu"))
    assert not rec["hit"] and rec["bytes"] > 0
    batch = next(iter(data.train))
    assert set(batch.extra["view"].tolist()) <= {0, 1, 2}
    live = Teacher(members)
    for temperature in (1.0, 4.0):
        want = live.probs(batch.x, temperature)  # the teacher on the very crops this batch holds
        got = cached.soft_targets(batch, temperature)
        assert torch.equal(got.argmax(1), want.argmax(1))
        assert torch.allclose(got.sum(1), torch.ones(len(got)), atol=1e-4)
        if top_k is None:  # every class stored: equal up to fp16 log-probabilities
            assert (got - want).abs().max().item() < 2e-3
        elif temperature == 1.0:  # the top 3 exact, the other 7 share the rest of the mass evenly
            top = want.topk(3, dim=1).indices
            assert (got.gather(1, top) - want.gather(1, top)).abs().max().item() < 2e-3
            rest = torch.ones_like(want, dtype=torch.bool).scatter_(1, top, False)
            assert torch.allclose((got * rest).sum(1), (want * rest).sum(1), atol=2e-3)
            assert torch.allclose(got[rest].view(len(got), 7).std(1), torch.zeros(len(got)), atol=1e-6)
    # A second student of the same teacher reuses it; another teacher (or augmentation) builds anew.
    _, again = open_cache(cfg, [str(teacher_run)], [_file_digest(teacher_run)], data.train,
                          lambda paths: Teacher(members), torch.device("cpu"))
    assert again["hit"] and again["key"] == rec["key"]
    other = create_model("cnn:8-16", 10, 1, 8)
    _, changed = open_cache(cfg, [str(teacher_run)], ["another digest"], data.train,
                            lambda paths: Teacher([other]), torch.device("cpu"))
    assert not changed["hit"] and changed["key"] != rec["key"]
    flip_only = prepare_data(DataConfig(**DATA, augment=AugmentConfig(hflip=True)), 0)
    _, aug = open_cache(cfg, [str(teacher_run)], [_file_digest(teacher_run)], flip_only.train,
                        lambda paths: Teacher(members), torch.device("cpu"))
    assert not aug["hit"] and aug["key"] != rec["key"]


def test_kd_born_again_and_refinery_train_from_the_cache(tmp_path, teacher_run):
    base = {"recipe": "train", "data": {**DATA, "augment": {"jitter": 1}}, "model": {"name": "cnn:8-16"},
            "train": {"epochs": 6, "optim": {"lr": 0.1}}, "seeds": [0]}
    methods = {"kd": {"name": "kd", "temperature": 4}, "ban": {"name": "born-again", "variant": "ban+l"},
               "refinery": {"name": "refinery"}, "kd-online": {"name": "kd", "temperature": 4}}
    summaries = {}
    for name, method in methods.items():
        online = name == "kd-online"  # run under the name "kd" too: the same run seed, a paired comparison
        cache = {} if online else {"cache": {"views": 2}}
        run, out = ("kd", tmp_path / "online") if online else (name, tmp_path / "o")
        cfg = {**base, "name": run, "method": {**method, "teacher": [str(teacher_run)], **cache}}
        assert main(["run", _write(tmp_path, name, cfg), "--out", str(out), "--quiet"]) == 0
        summaries[name] = json.loads((out / run / "seed0" / "summary.json").read_text())
    assert not summaries["kd"]["soft_label_cache"]["hit"]  # built by the first student …
    assert summaries["ban"]["soft_label_cache"]["hit"] and summaries["refinery"]["soft_label_cache"]["hit"]  # … reused
    assert "soft_label_cache" not in summaries["kd-online"]
    assert all(s["test_acc"] > 0.8 for s in summaries.values())  # 10 classes: chance is 0.1
    # 2 stored views per example vs the teacher on every fresh crop, same init and order: on 360
    # test digits the cached student was 4.2 points (15 images) behind — fewer distinct crops of
    # 1,400 images; benchmarks/soft_label_cache.py measures this cost over seeds on Fashion-MNIST.
    # Labels from the wrong crops or examples would cost far more.
    assert summaries["kd"]["test_acc"] > summaries["kd-online"]["test_acc"] - 0.08
    assert (teacher_run / "soft-labels").is_dir()


def test_feature_methods_refuse_the_cache(tmp_path, teacher_run, capsys):
    cfg = {"recipe": "train", "name": "at", "data": DATA, "model": {"name": "cnn:8-16"}, "train": {"epochs": 1},
           "method": {"name": "at", "teacher": [str(teacher_run)], "cache": {"views": 1}}, "seeds": [0]}
    assert main(["run", _write(tmp_path, "at", cfg), "--out", str(tmp_path / "o")]) == 2
    assert "cache" in capsys.readouterr().err


def test_a_cache_finished_first_by_another_process_is_taken(tmp_path, teacher_run):
    # Two runs (Ray workers) building the same cache at once: the second's rename fails because the
    # first's folder is there; its manifest differs only in the build time, so the second uses it.
    from distillab.engine.soft_labels import build

    data = prepare_data(DataConfig(**DATA), 0)
    members = [load_model(teacher_run)]
    cfg = SoftLabelCacheConfig(views=1, dir=str(tmp_path / "cache"))
    _, first = open_cache(cfg, [str(teacher_run)], [_file_digest(teacher_run)], data.train,
                          lambda paths: Teacher(members), torch.device("cpu"))
    folder = tmp_path / "cache" / first["key"]
    meta = json.loads((folder / "meta.json").read_text())
    meta["build_seconds"] += 3.5  # the other builder's own time
    (folder / "meta.json").write_text(json.dumps(meta))
    # The second builder (its own check ran before the first finished) builds and renames last.
    got = build(folder, Teacher(members), data.train, cfg, meta["view_seed"], torch.device("cpu"), key=first["key"])
    assert got == meta and json.loads((folder / "meta.json").read_text()) == meta
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # its temporary is gone
