"""Hostile data (issue #24, class 4): image folders with symlink loops, FIFOs, 16-bit images and
decompression bombs; WebDataset folders whose meta.json lies or whose shards are truncated, missing
or of the wrong type. Bad data is a one-line error naming the file, exit 2, nothing changed on
disk; good data of an unusual kind (16-bit, symlinked folders) is read right."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from test_hostile_inputs import BASE, assert_refused, _yaml

from distillab.cli import main
from distillab.data.sources import load_source


def _png(path, value=128, size=6, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value).save(path)


def _folder(t, per_class=3):
    root = t / "imgs"
    for split in ("train", "test"):
        for c, v in (("dark", 40), ("light", 200)):
            for i in range(per_class):
                _png(root / split / c / f"{i}.png", v + i)
    return root


def _bomb_png(path):
    """A PNG whose header claims 100000 x 100000 pixels, in a few bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def _imgcfg(t, root):
    return _yaml(t, {**BASE, "data": {"source": f"imagefolder:{root}", "val_size": 0, "image_size": 8}})


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "shards"
    assert main(["data", "pack", "digits", str(out), "--val", "50", "--limit", "300", "--shard-size", "100"]) == 0
    return out


def _shards(t, packed):
    shutil.copytree(packed, t / "shards")
    return t / "shards"


def _meta(root, **change):
    m = json.loads((root / "meta.json").read_text())
    for k, v in change.items():
        m[k] = v
    (root / "meta.json").write_text(json.dumps(m))
    return m


def _wdscfg(t, root):
    return _yaml(t, {**BASE, "data": {"source": f"webdataset:{root}", "val_size": 50, "num_workers": 0}})


# ---- image folders
def c_fifo(t):
    root = _folder(t)
    os.mkfifo(root / "train" / "dark" / "z.png")
    return ["run", _imgcfg(t, root)], "z.png"
def c_bomb(t):
    root = _folder(t)
    _bomb_png(root / "train" / "dark" / "bomb.png")
    return ["run", _imgcfg(t, root)], "bomb.png"
def c_float_image(t):
    root = _folder(t)
    Image.fromarray(np.zeros((4, 4), np.float32), mode="F").save(root / "train" / "dark" / "f.tiff")
    return ["run", _imgcfg(t, root)], "f.tiff"
def c_empty_class(t):
    root = _folder(t)
    (root / "train" / "empty").mkdir()
    (root / "test" / "empty").mkdir()
    return ["run", _imgcfg(t, root)], "empty"
def c_truncated_png(t):
    root = _folder(t)
    p = root / "train" / "dark" / "0.png"
    p.write_bytes(p.read_bytes()[:30])
    return ["run", _imgcfg(t, root)], "0.png"
def c_pack_fifo(t):
    root = _folder(t)
    os.mkfifo(root / "train" / "dark" / "z.png")
    return ["data", "pack", f"imagefolder:{root}", str(t / "out"), "--val", "0"], "z.png"


# ---- WebDataset folders
def c_wds_counts_lie(t, packed=None):
    root = _shards(t, packed)
    m = json.loads((root / "meta.json").read_text())
    _meta(root, counts={**m["counts"], "train": m["counts"]["train"] * 3},
          shard_counts={**m["shard_counts"], "train": [x * 3 for x in m["shard_counts"]["train"]]})
    return ["run", _wdscfg(t, root)], "counts.train"
def c_wds_truncated_shard(t, packed=None):
    root = _shards(t, packed)
    p = root / "train-000001.tar"
    p.write_bytes(p.read_bytes()[:5000])
    return ["run", _wdscfg(t, root)], "train-000001.tar"
def c_wds_missing_split(t, packed=None):
    root = _shards(t, packed)
    m = json.loads((root / "meta.json").read_text())
    del m["counts"]["test"], m["shards"]["test"]
    (root / "meta.json").write_text(json.dumps(m))
    return ["run", _wdscfg(t, root)], "test"
def c_wds_shards_string(t, packed=None):
    root = _shards(t, packed)
    _meta(root, shards="train-000000.tar")
    return ["run", _wdscfg(t, root)], "shards"
def c_wds_shard_list_of_ints(t, packed=None):
    root = _shards(t, packed)
    m = json.loads((root / "meta.json").read_text())
    _meta(root, shards={**m["shards"], "train": [0, 1, 2]})
    return ["run", _wdscfg(t, root)], "shards.train"
def c_wds_shard_outside(t, packed=None):
    root = _shards(t, packed)
    m = json.loads((root / "meta.json").read_text())
    _meta(root, shards={**m["shards"], "train": ["../../etc/passwd"]})
    return ["run", _wdscfg(t, root)], "shards.train"
def c_wds_negative_shape(t, packed=None):
    root = _shards(t, packed)
    _meta(root, shape=[1, -8, 8])
    return ["run", _wdscfg(t, root)], "shape"
def c_wds_std_zero(t, packed=None):
    root = _shards(t, packed)
    _meta(root, std=[0.0])
    return ["run", _wdscfg(t, root)], "std"
def c_wds_classes_dict(t, packed=None):
    root = _shards(t, packed)
    _meta(root, classes={"a": 1})
    return ["run", _wdscfg(t, root)], "classes"
def c_wds_non_image_payload(t, packed=None):
    import tarfile

    root = _shards(t, packed)
    src = root / "test-000000.tar"
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(src, "w") as tar:
        import io

        for m, data in members:
            if m.name.endswith(".png"):
                m.name = m.name[:-4] + ".txt"
            tar.addfile(m, io.BytesIO(data))
    return ["run", _wdscfg(t, root)], "lacks an image"
def c_wds_payload_named_png_is_not_a_png(t, packed=None):
    import io
    import tarfile

    root = _shards(t, packed)
    src = root / "train-000000.tar"
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(src, "w") as tar:  # same names and counts (meta.json still matches): only the bytes lie
        for m, data in members:
            if m.name.endswith(".png"):
                data = b"not a png at all"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return ["run", _wdscfg(t, root)], "payload is not a PNG image"
def c_imagefolder_sizes_differ(t):
    root = _folder(t)
    _png(root / "train" / "dark" / "big.png", 40, size=9)  # 6x6 and 9x9 with no data.image_size
    cfg = _yaml(t, {**BASE, "data": {"source": f"imagefolder:{root}", "val_size": 0}})
    return ["run", cfg], "image_size"
def c_pack_imagefolder_sizes_differ(t):
    root = _folder(t)
    _png(root / "test" / "light" / "big.png", 200, size=9)
    return ["data", "pack", f"imagefolder:{root}", str(t / "out"), "--val", "0"], "--image-size"
def c_channels_on_a_builtin_source(t):
    return ["run", _yaml(t, BASE), "data.channels=3"], "data.channels"
def c_pack_channels_on_a_builtin_source(t):
    return ["data", "pack", "digits", str(t / "out"), "--channels", "3"], "--channels"
def c_wds_label_out_of_range(t, packed=None):
    root = _shards(t, packed)
    _meta(root, classes=["0", "1"])  # the shards hold labels up to 9
    return ["run", _wdscfg(t, root)], "class"
def c_wds_shard_is_garbage(t, packed=None):
    root = _shards(t, packed)
    (root / "val-000000.tar").write_bytes(b"garbage" * 100)
    return ["run", _wdscfg(t, root)], "val-000000.tar"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("c_")]


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__[2:])
def test_hostile_data_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys, monkeypatch, packed):
    monkeypatch.setenv("DISTILLAB_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    argv, needle = case(tmp_path, packed) if case.__name__.startswith("c_wds") else case(tmp_path)
    assert_refused(argv, needle, tmp_path, capsys)


def test_a_symlink_loop_serves_each_image_once(tmp_path):
    root = _folder(tmp_path)
    os.symlink("..", root / "train" / "dark" / "loop")  # dark/loop → train/, and round again
    os.symlink("../../test", root / "test" / "light" / "up")
    ds = load_source(f"imagefolder:{root}", image_size=6)
    assert len(ds.y_train) == 6 + 3 * 1 and len(ds.y_test) == 6 + 3  # the loop adds one pass, not forty


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for c, v in (("dark", 10_000), ("light", 50_000)):
            p = root / split / c / "0.png"
            p.parent.mkdir(parents=True)
            Image.fromarray(np.full((6, 6), v, np.uint16)).save(p)
            assert Image.open(p).mode.startswith("I")
    ds = load_source(f"imagefolder:{root}", image_size=6)
    assert ds.x_train[0].float().mean().item() == pytest.approx(10_000 / 257, abs=1)
    assert ds.x_train[1].float().mean().item() == pytest.approx(50_000 / 257, abs=1)


def test_a_corrupt_image_inside_a_shard_is_one_line_from_the_workers(tmp_path, packed, capsys):
    """A payload with a PNG signature and a broken body passes the shard check and fails in a
    DataLoader worker: still one line, exit 2, no worker traceback."""
    import io
    import tarfile

    root = _shards(tmp_path, packed)
    src = root / "train-000000.tar"
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(src, "w") as tar:
        for m, data in members:
            if m.name.endswith(".png"):
                data = data[:8] + b"\x00" * 40  # the signature, then garbage
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    cfg = _yaml(tmp_path, {**BASE, "data": {"source": f"webdataset:{root}", "val_size": 50, "num_workers": 2}})
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert "train-000000.tar" in err and "is not a readable image" in err


def test_honest_shards_still_train(tmp_path, packed, capsys):
    root = _shards(tmp_path, packed)
    assert main(["run", _wdscfg(tmp_path, root), "--out", str(tmp_path / "o"), "--quiet"]) == 0


def test_corpus_size():
    assert len(CASES) >= 18
