"""Streaming sources: `distillab data pack` writes WebDataset shards; training reads them batch by
batch, seeded per epoch, sharded per DDP rank, with the source's fixed normalisation."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytest.importorskip("webdataset", reason="webdataset is not installed (pip install 'distillab[stream]')")

from distillab.cli import main  # noqa: E402
from distillab.config import DataConfig  # noqa: E402
from distillab.data import prepare_data  # noqa: E402
from distillab.data.streaming import StreamLoader, read_meta  # noqa: E402
from distillab.engine.checkpoint import read_model_spec  # noqa: E402


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("wds") / "digits"
    assert main(["data", "pack", "digits", str(out), "--val", "200", "--shard-size", "300"]) == 0
    return out


def test_pack_writes_splits_counts_and_constants(shards, capsys):
    meta = read_meta(shards)
    assert meta["counts"] == {"train": 1238, "val": 200, "test": 359} and meta["shape"] == [1, 8, 8]
    assert len(meta["shards"]["train"]) == 5  # 1238 examples, 300 per shard
    memory = prepare_data(DataConfig(source="digits", val_size=200), 0)
    # the in-memory loader's fixed statistics are over the whole training split; the shards' over
    # the 1,238 packed for training: close, not equal
    assert meta["mean"][0] == pytest.approx(memory.mean[0], abs=0.01)
    assert main(["data", "pack", "digits", str(shards)]) == 2  # never overwrites shards
    assert "is not empty" in capsys.readouterr().err


def _indices(loader: StreamLoader, epoch: int) -> list[int]:
    loader.set_epoch(epoch)
    return torch.cat([b.index for b in loader]).tolist()


def test_stream_order_is_seeded_per_epoch_and_split_across_ranks(shards):
    meta = read_meta(shards)
    common = dict(mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]), shuffle=True, seed=3,
                  num_workers=2, buffer=100)
    one = StreamLoader(shards, "train", meta, 64, **common)
    e0 = _indices(one, 0)
    assert len(e0) == len(one) * 64 == 1216 and len(set(e0)) == len(e0)  # full batches across 2 workers, no repeats
    assert _indices(one, 0) == e0 and _indices(one, 1) != e0  # (seed, epoch) decides the order
    ranks = [StreamLoader(shards, "train", meta, 64, shard=(r, 2), **common) for r in (0, 1)]
    a, b = _indices(ranks[0], 0), _indices(ranks[1], 0)
    # rank 0 reads shards 0, 2, 4 (300 + 300 + 38 examples), rank 1 shards 1, 3 (600): both stop at 600 // 32
    assert len(ranks[0]) == len(ranks[1]) == 18 and len(a) == len(b) == 18 * 32
    assert not set(a) & set(b)  # disjoint shards per rank


def test_training_from_shards_end_to_end(shards, tmp_path):
    cfg = {"recipe": "train", "name": "s", "seeds": [0], "model": {"name": "cnn:8-16"},
           "data": {"source": f"webdataset:{shards}", "val_size": 200, "batch_size": 64, "num_workers": 2,
                    "augment": {"jitter": 1}},
           "train": {"epochs": 3, "optim": {"lr": 0.1}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    run = tmp_path / "o" / "s" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] > 0.5 and summary["test_n"] == 359 and summary["val_acc"] > 0.5
    meta = read_meta(shards)
    assert read_model_spec(run)[1]["normalize"] == {"mean": meta["mean"], "std": meta["std"]}


@pytest.mark.parametrize("bad, message", [({"val_size": 100}, "validation split of 200"),
                                          ({"shots": 5}, "data.shots is not supported")])
def test_stream_config_errors_name_the_key(shards, tmp_path, capsys, bad, message):
    cfg = {"recipe": "train", "name": "s", "seeds": [0], "model": {"name": "mlp:8"},
           "data": {"source": f"webdataset:{shards}", "val_size": 200, **bad}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_missing_shards_fail_before_training(tmp_path, capsys):
    cfg = {"recipe": "train", "name": "s", "seeds": [0], "model": {"name": "mlp:8"},
           "data": {"source": f"webdataset:{tmp_path / 'nowhere'}"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "distillab data pack" in capsys.readouterr().err and not (tmp_path / "o").exists()


_ITERATE = """
import resource, sys, torch
from pathlib import Path
from distillab.data.streaming import StreamLoader, read_meta
root = Path(sys.argv[1]); meta = read_meta(root)
loader = StreamLoader(root, "train", meta, 256, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]),
                      shuffle=True, num_workers=2)
seen = sum(len(b.y) for b in loader)
print(seen, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_streaming_memory_stays_flat_as_the_data_grows(tmp_path):
    import os
    import subprocess
    import sys

    from distillab.data.sources import load_source
    from distillab.errors import UserError

    try:
        load_source("fashion-mnist")
    except UserError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    peaks = {}
    for name, limit in (("small", ["--limit", "5000"]), ("full", [])):
        assert main(["data", "pack", "fashion-mnist", str(tmp_path / name), "--val", "5000", *limit]) == 0
        out = subprocess.run([sys.executable, "-c", _ITERATE, str(tmp_path / name)], check=True, capture_output=True,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
        peaks[name] = (int(out[0]), int(out[1]) / 1024)  # examples seen, peak RSS in MB
    assert peaks["small"][0] == 4864 and peaks["full"][0] == 54784  # full batches of 256
    # 11x the examples (and 11x the decoded bytes, 43 MB) for at most a few MB more: the stream
    # holds a shuffle buffer per worker, never the dataset
    assert peaks["full"][1] - peaks["small"][1] < 20, peaks


def test_batch_index_is_the_position_in_the_packed_split(shards):
    meta = read_meta(shards)
    loader = StreamLoader(shards, "train", meta, 64, mean=torch.tensor(meta["mean"]), std=torch.tensor(meta["std"]),
                          shuffle=True, num_workers=0)
    seen = torch.cat([b.index for b in loader])
    assert seen.min() >= 0 and seen.max() < meta["counts"]["train"]  # what CRD's memory bank indexes


def _image_folder(root, n=300, mode="L", side=8):
    """The first ``n`` train and test digits as PNGs: 8x8 grey, or bigger RGB (to be resized)."""
    import numpy as np
    from PIL import Image

    from distillab.data.sources import load_source

    ds = load_source("digits")
    for split, x, y in (("train", ds.x_train[:n], ds.y_train[:n]), ("test", ds.x_test[:n // 3], ds.y_test[:n // 3])):
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            im = Image.fromarray(img[0].numpy().astype(np.uint8), mode="L")
            if mode != "L":  # colour: a tint per class, and not the training size
                im = Image.merge("RGB", (im, im.point(lambda v, k=int(label): (v * k) // 9), im)).resize((side, side))
            (root / split / str(int(label))).mkdir(parents=True, exist_ok=True)
            im.save(root / split / str(int(label)) / f"{i:04d}.png")
    return root


def test_pack_keeps_an_8x8_grey_image_folder_as_1x8x8(tmp_path):
    folder = _image_folder(tmp_path / "digits")
    assert main(["data", "pack", f"imagefolder:{folder}", str(tmp_path / "kept"), "--val", "0"]) == 0
    assert read_meta(tmp_path / "kept")["shape"] == [1, 8, 8]  # not 3x32x32
    assert main(["data", "pack", f"imagefolder:{folder}", str(tmp_path / "asked"), "--val", "0", "--image-size", "16",
                 "--channels", "3"]) == 0  # conversion only when asked for
    assert read_meta(tmp_path / "asked")["shape"] == [3, 16, 16]
    from distillab.data.sources import load_source

    assert load_source(f"imagefolder:{folder}").shape == (1, 8, 8)  # the in-memory loader agrees


@pytest.mark.parametrize("mode, side, size", [("L", 8, None), ("RGB", 12, 8)], ids=["grey-as-is", "rgb-resized"])
def test_streamed_and_in_memory_image_folders_give_identical_tensors(tmp_path, mode, side, size):
    """A streamed and an in-memory study of one image folder train the same model on the same tensors."""
    folder = _image_folder(tmp_path / "imgs", mode=mode, side=side)
    pack = ["--image-size", str(size)] if size else []
    assert main(["data", "pack", f"imagefolder:{folder}", str(tmp_path / "wds"), "--val", "0", *pack]) == 0
    extra = {"image_size": size} if size else {}
    mem = prepare_data(DataConfig(source=f"imagefolder:{folder}", val_size=0, **extra), 0)
    stream = prepare_data(DataConfig(source=f"webdataset:{tmp_path / 'wds'}", val_size=0, num_workers=2), 0,
                          normalization=mem.normalization)
    assert mem.shape == stream.shape == ((1 if mode == "L" else 3), 8, 8)
    meta = read_meta(tmp_path / "wds")  # the pack's own constants: the in-memory loader's, over the same images
    assert meta["mean"] == pytest.approx(list(mem.mean), abs=1e-5)
    assert meta["std"] == pytest.approx(list(mem.std), abs=1e-5)
    a, b = list(mem.test), list(stream.test)  # evaluation order: the folder's, in both
    assert torch.equal(torch.cat([x.y for x in a]), torch.cat([x.y for x in b]))
    assert torch.equal(torch.cat([x.x for x in a]), torch.cat([x.x for x in b]))
    stream.train.set_epoch(0)
    # shuffled: match by index
    seen = {int(i): x for batch in stream.train for i, x in zip(batch.index, batch.x, strict=True)}
    train = {int(i): x for batch in mem.train for i, x in zip(batch.index, batch.x, strict=True)}
    common = set(seen) & set(train)  # both drop a last partial batch, each its own
    assert len(common) > 0.7 * len(train) and all(torch.equal(seen[i], train[i]) for i in common)


@pytest.mark.parametrize("fmt", ["GNU_FORMAT", "PAX_FORMAT", "USTAR_FORMAT"])
def test_the_shard_reader_reads_what_tarfile_writes(tmp_path, fmt):
    """The small tar reader (streaming._tar_members) against Python's tarfile: long names in each
    format's way (GNU records, PAX headers, the ustar prefix), payloads padded to 512 bytes."""
    import io
    import tarfile

    from distillab.data.streaming import _tar_members

    names = ["a" * 30 + "/" + "b" * 80 + "/000000001.png", "000000001.cls", "000000002.png"]
    with tarfile.open(tmp_path / "t.tar", "w", format=getattr(tarfile, fmt)) as tar:
        for i, name in enumerate(names):
            data = bytes([i]) * (700 + i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert list(_tar_members(str(tmp_path / "t.tar"))) == [(n, bytes([i]) * (700 + i)) for i, n in enumerate(names)]
