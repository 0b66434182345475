"""Data: IDX reading, locating files, splits, and the batch-augmenting loader."""

import gzip
import struct

import pytest
import torch

from distillab.config import AugmentConfig, DataConfig
from distillab.data import BatchLoader, load_source, prepare_data, shift_batch
from distillab.data.loader import flip_batch
from distillab.data.sources import Dataset, read_idx
from distillab.data.splits import subset_indices, train_val_indices
from distillab.errors import UserError


def pairs(batches):
    return [(bt.x, bt.y) for bt in batches]


def _write_idx(path, arr: torch.Tensor, gz: bool) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.numpy().tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    arr = torch.randint(0, 256, (5, 3, 4), dtype=torch.uint8)
    p = tmp_path / ("x.idx.gz" if gz else "x.idx")
    _write_idx(p, arr, gz)
    assert torch.equal(read_idx(p), arr)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"not an idx file at all")
    with pytest.raises(UserError, match="not a valid IDX"):
        read_idx(p)


def test_fashion_mnist_found_in_data_dir(tmp_path, no_data_anywhere):
    # A fake Fashion-MNIST laid out as Debian does: <dir>/fashion-mnist/*.gz
    d = tmp_path / "mine" / "fashion-mnist"
    d.mkdir(parents=True)
    for stem, n in (("train", 30), ("t10k", 10)):
        _write_idx(d / f"{stem}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8), True)
        _write_idx(d / f"{stem}-labels-idx1-ubyte.gz", torch.randint(0, 10, (n,), dtype=torch.uint8), True)
    ds = load_source("fashion-mnist", data_dir=tmp_path / "mine")
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.num_classes == 10


def test_missing_data_error_says_how_to_get_it(no_data_anywhere):
    with pytest.raises(UserError) as e:
        load_source("fashion-mnist")
    msg = str(e.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "--data-dir" in msg and "DISTILLAB_DATA" in msg
    assert "\n" not in msg


def test_labels_out_of_range_rejected():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    bad = Dataset("toy", x, torch.tensor([0, 1, 2, 7]), x, torch.tensor([0, 1, 2, 0]), ["a", "b", "c"])
    with pytest.raises(UserError, match="labels out of range"):
        bad.check()


def test_digits_source():
    ds = load_source("digits")
    assert ds.shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 1797


def test_train_val_split_is_disjoint_and_seeded():
    tr, va = train_val_indices(100, 20, seed=3)
    assert len(tr) == 80 and len(va) == 20
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(va, train_val_indices(100, 20, seed=3)[1])
    assert not torch.equal(va, train_val_indices(100, 20, seed=4)[1])


def test_subset_is_stratified():
    labels = torch.arange(10).repeat(50)
    idx = subset_indices(labels, 100, seed=0)
    assert len(idx) == 100
    assert torch.bincount(labels[idx], minlength=10).tolist() == [10] * 10


def test_shift_moves_content_and_keeps_shape():
    x = torch.zeros(64, 1, 7, 7)
    x[:, :, 3, 3] = 1.0  # one bright pixel in the middle
    out = shift_batch(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 7, pos % 7
    assert out.sum().item() == 64  # zero fill: nothing lost, nothing added
    assert rows.min() >= 1 and rows.max() <= 5 and cols.min() >= 1 and cols.max() <= 5
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # per-sample, not one shift for the batch


def test_flip_flips_about_half():
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(200, 1, 1, 1)
    out = flip_batch(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.35 < flipped < 0.65
    assert torch.equal(out.sort(-1).values, x)


def _loader(aug=None, seed=0):
    x = torch.randint(0, 256, (50, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    y = torch.arange(50) % 5
    return BatchLoader(x, y, 16, mean=torch.tensor([0.5]), std=torch.tensor([0.25]), augment=aug,
                       shuffle=True, seed=seed)


def test_loader_is_deterministic_per_epoch_and_differs_across_epochs():
    aug = AugmentConfig(jitter=1, hflip=True)
    a, b = _loader(aug), _loader(aug)
    a.set_epoch(2)
    b.set_epoch(2)
    batches_a, batches_b = list(a), list(b)
    assert all(
        torch.equal(xa, xb) and torch.equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(pairs(batches_a), pairs(batches_b), strict=True)
    )
    b.set_epoch(3)
    assert not torch.equal(batches_a[0].x, next(iter(b)).x)
    assert sum(len(bt.y) for bt in batches_a) == 50 and len(a) == 4


def test_loader_normalises():
    ld = _loader()
    x = torch.cat([bt.x for bt in ld])
    raw = ld.x.float() / 255
    assert torch.allclose(x.sort(0).values, ((raw - 0.5) / 0.25).sort(0).values, atol=1e-5)


def test_prepare_data_shapes():
    cfg = DataConfig(source="digits", val_size=100, train_subset=500, batch_size=50)
    b = prepare_data(cfg, seed=0)
    assert b.num_classes == 10 and b.shape == (1, 8, 8)
    assert len(b.train.y) == 500 and len(b.val.y) == 100


def test_imagefolder_source(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20 + i, 10), color).save(d / f"{i}.png")
    ds = load_source(f"imagefolder:{tmp_path}", image_size=12)
    assert ds.x_train.shape == (6, 3, 12, 12) and ds.x_test.shape == (4, 3, 12, 12)
    assert ds.classes == ["cat", "dog"]
    red = ds.x_train[ds.y_train == 0]
    assert (red[:, 0] == 255).all() and (red[:, 2] == 0).all()


def test_imagefolder_needs_splits(tmp_path):
    with pytest.raises(UserError, match="train/ and test/"):
        load_source(f"imagefolder:{tmp_path}")


def test_fraction_and_shots_in_prepare_data():
    base = DataConfig(source="digits", val_size=100, batch_size=50)
    full = len(prepare_data(base, 0).train.y)
    half = prepare_data(base.model_copy(update={"fraction": 0.5}), 0)
    assert len(half.train.y) == round(0.5 * full)
    shots = prepare_data(base.model_copy(update={"shots": 3}), 0)
    assert torch.bincount(shots.train.y).tolist() == [3] * 10


def test_training_epoch_never_ends_on_a_single_example():
    x = torch.zeros(25, 1, 4, 4, dtype=torch.uint8)
    y = torch.zeros(25, dtype=torch.long)
    common = dict(mean=torch.tensor([0.5]), std=torch.tensor([0.25]))
    train = BatchLoader(x, y, 8, shuffle=True, **common)
    assert [len(bt.y) for bt in train] == [8, 8, 8]
    evaluation = BatchLoader(x, y, 8, **common)  # evaluation sees every example
    assert [len(bt.y) for bt in evaluation] == [8, 8, 8, 1]
