import csv
"""The two transfer studies end to end from the CLI, on digits with tiny nets."""

import yaml

from distillab.cli import main

DATA = {"source": "digits", "val_size": 100, "batch_size": 64}
MODEL = {"name": "cnn:8-8-8", "kwargs": {"norm": "bn", "fc": 16}}
TRAIN = {"epochs": 2, "optim": {"lr": 0.05}}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_layer_transfer_study(tmp_path, capsys):
    cfg = {"recipe": "layer-transfer", "data": DATA, "split": {"split": "random", "seed": 1}, "model": MODEL,
           "train": TRAIN, "ns": [1, 3], "variants": ["BnB", "AnB+", "random"], "seeds": [0]}
    out = tmp_path / "lt"
    assert main(["run", _write(tmp_path / "c.yaml", cfg), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "| n " in md and "BnB" in md and "AnB+" in md and "base B" in md
    assert (out / "layer_transfer.png").stat().st_size > 1000 and (out / "layer_transfer.svg").is_file()
    assert (out / "n3" / "AnB+" / "seed0" / "summary.json").is_file()
    # Finished runs are read back, not retrained: a second call changes no metrics file.
    stamp = (out / "baseA" / "seed0" / "metrics.jsonl").stat().st_mtime_ns
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    assert (out / "baseA" / "seed0" / "metrics.jsonl").stat().st_mtime_ns == stamp


def test_layer_transfer_n_out_of_range(tmp_path, capsys):
    cfg = {"recipe": "layer-transfer", "data": DATA, "model": MODEL, "train": TRAIN, "ns": [5]}
    assert main(["run", _write(tmp_path / "c.yaml", cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ns: 5 out of range" in err and "1..4" in err
    assert not (tmp_path / "o").exists()


def test_scratch_vs_pretrained_study(tmp_path, capsys):
    half = lambda part: dict(DATA, classes={"split": "random", "seed": 0, "part": part})  # noqa: E731
    cfg = {
        "recipe": "scratch-vs-pretrained",
        "source": {"data": half("A"), "train": TRAIN},
        "data": dict(half("B"), batch_size=16, train_subset=200),
        "model": {"name": "cnn:8-8", "kwargs": {"norm": "gn"}},
        "train": {"epochs": 1, "optim": {"lr": 0.02}},
        "schedules": [1, 2],
        "seeds": [0],
    }
    out = tmp_path / "svp"
    assert main(["run", _write(tmp_path / "c.yaml", cfg), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "random init" in md and "w/ pre-train" in md and "2x (2 ep)" in md
    assert (out / "learning_curves.png").is_file()
    assert (out / "pretrained" / "2x" / "seed0" / "summary.json").is_file()
    # The primary claim is one trend over all schedules (a slope per seed), not one test per schedule.
    labels = [r[0] for r in csv.reader((out / "results-comparisons.csv").open())][1:]
    assert labels == ["primary: gap trend, pts per schedule doubling (1x…2x)", "pre-trained − random init, 1x",
                      "pre-trained − random init, 2x"]


def test_transfer_from_mismatched_checkpoint(tmp_path, capsys):
    src = {"recipe": "train", "name": "src", "data": DATA, "model": {"name": "cnn:4-4-4"}, "train": TRAIN}
    assert main(["run", _write(tmp_path / "s.yaml", src), "--out", str(tmp_path / "s")]) == 0
    tgt = dict(src, name="tgt", model=MODEL, init={"source": str(tmp_path / "s" / "src" / "seed0"), "blocks": 2})
    assert main(["run", _write(tmp_path / "t.yaml", tgt), "--out", str(tmp_path / "t")]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
