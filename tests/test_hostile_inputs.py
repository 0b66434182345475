"""A hostile user's corpus: every bad config, override, data folder, image folder, checkpoint, run
folder and report/profile input ends with exit code 2, one `error:` line naming the problem, no
traceback — and nothing on disk changed. Faults (disk full) leave the last committed state intact
and no orphan files."""

import errno
import hashlib
import json
import os
import pickle

import pytest
import yaml

from distillab.cli import main

BASE = {"recipe": "train", "name": "mlp", "data": {"source": "digits", "val_size": 200, "batch_size": 64},
        "model": {"name": "mlp:32"}, "train": {"epochs": 2, "optim": {"lr": 0.05}}, "seeds": [0]}


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(argv, needle, root, capsys):
    """``distillab argv`` ends with exit 2 and one ``error:`` line containing ``needle``, and no
    file under ``root`` changed."""
    capsys.readouterr()
    before = _snapshot(root)
    code = main([*argv, "--quiet"] if argv[0] == "run" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err
    assert _snapshot(root) == before


def _yaml(tmp, data, name="c.yaml"):
    (tmp / name).write_text(yaml.safe_dump(data))
    return str(tmp / name)


def _raw(tmp, content: bytes | str, name="c.yaml"):
    p = tmp / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def _finished_run(tmp):
    """A finished run folder (kept checkpoints), built once per case that needs it."""
    cfg = _yaml(tmp, BASE, "base.yaml")
    assert main(["run", cfg, "--out", str(tmp / "out"), "--keep-checkpoints", "--quiet"]) == 0
    return cfg, tmp / "out" / "mlp" / "seed0"


def _laughs(depth=12):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, depth):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines)


# ---- each case: (id, setup(tmp) -> argv, substring the error must contain)
def c_binary(t):
    return ["run", _raw(t, bytes(range(256)) * 8)], "UTF-8"
def c_elf(t):
    return ["run", _raw(t, b"\x7fELF\x02\x01\x01" + b"\x00" * 200)], "c.yaml"
def c_pickle(t):
    return ["run", _raw(t, pickle.dumps({"recipe": "train"}))], "c.yaml"
def c_deep(t):
    return ["run", _raw(t, "a: " + "[" * 5000 + "]" * 5000)], "c.yaml"
def c_not_mapping(t):
    return ["run", _raw(t, "- 1\n- 2\n")], "mapping"
def c_missing_config(t):
    return ["run", str(t / "nope.yaml")], "not found"
def c_config_is_dir(t):
    (t / "d.yaml").mkdir()
    return ["run", str(t / "d.yaml")], "d.yaml"
def c_recursive_alias_data_dir(t):
    return ["run", _raw(t, "recipe: train\nmodel: {name: 'mlp:8', kwargs: {x: &a [*a]}}\n"), "--data-dir", str(t)], \
        "kwargs"
def c_laughs_in_kwargs(t):
    return ["run", _raw(t, _laughs() + "\nrecipe: train\nmodel: {name: 'mlp:8', kwargs: {x: *a11}}\n")], "kwargs"
def c_laughs_with_data_dir(t):
    return ["run", _raw(t, _laughs() + "\nrecipe: train\nmodel: {name: 'mlp:8'}\nextra: *a11\n"),
            "--data-dir", str(t)], "unknown key"
def c_unknown_recipe(t):
    return ["run", _yaml(t, {**BASE, "recipe": "nope"})], "recipe"
def c_unknown_key(t):
    return ["run", _yaml(t, {**BASE, "modle": {}})], "modle"
def c_wrong_type(t):
    return ["run", _yaml(t, BASE), "train.epochs=many"], "train.epochs"
def c_negative_lr(t):
    return ["run", _yaml(t, BASE), "train.optim.lr=-1"], "lr"
def c_bad_override_form(t):
    return ["run", _yaml(t, BASE), "=3"], "override"
def c_override_into_scalar(t):
    return ["run", _yaml(t, BASE), "seeds.x=1"], "seeds"
def c_unknown_method(t):
    return ["run", _yaml(t, BASE), "method.name=nope"], "method"
def c_method_without_teacher(t):
    return ["run", _yaml(t, BASE), "method.name=kd"], "teacher"
def c_unknown_model(t):
    return ["run", _yaml(t, BASE), "model.name=nosuchnet"], "nosuchnet"
def c_bad_widths(t):
    return ["run", _yaml(t, BASE), "model.name=mlp:abc"], "widths"
def c_huge_model(t):
    return ["run", _yaml(t, BASE), "model.name=mlp:99999999999"], "mlp:99999999999"
def c_dropout_2(t):
    return ["run", _yaml(t, BASE), "model.kwargs={dropout: 2}"], "dropout"
def c_unknown_model_kwarg(t):
    return ["run", _yaml(t, BASE), "model.kwargs={depth: 3}"], "depth"
def c_data_dir_missing(t):
    return ["run", _yaml(t, {**BASE, "data": {"source": "fashion-mnist"}}), "--data-dir", str(t / "nope")], \
        "does not exist"
def c_data_dir_empty(t):
    (t / "empty").mkdir()
    return ["run", _yaml(t, {**BASE, "data": {"source": "fashion-mnist"}}), "--data-dir", str(t / "empty")], \
        "searched"
def c_mnist_named_fashion(t):
    import gzip

    import numpy as np

    d = t / "fake"
    d.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 60), ("t10k", 10_000)):
        imgs = bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + bytes(4 * n)
        labels = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + rng.integers(0, 10, n, dtype=np.uint8).tobytes()
        (d / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(imgs))
        (d / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return ["run", _yaml(t, {**BASE, "data": {"source": "fashion-mnist", "val_size": 10}}), "--data-dir", str(d)], \
        "not Fashion-MNIST"
def c_fashion_named_mnist(t):
    return ["run", _yaml(t, {**BASE, "data": {"source": "mnist"}}), "--data-dir",
            "/usr/share/datasets/fashion-mnist"], "Fashion-MNIST"
def c_unknown_source(t):
    return ["run", _yaml(t, BASE), "data.source=imagenet42"], "imagenet42"
def c_imagefolder_missing(t):
    return ["run", _yaml(t, {**BASE, "data": {"source": f"imagefolder:{t / 'imgs'}"}})], "imgs"
def c_imagefolder_no_test(t):
    (t / "imgs" / "train" / "a").mkdir(parents=True)
    return ["run", _yaml(t, {**BASE, "data": {"source": f"imagefolder:{t / 'imgs'}"}})], "test"
def c_imagefolder_bad_image(t):
    for split in ("train", "test"):
        (t / "imgs" / split / "a").mkdir(parents=True)
        (t / "imgs" / split / "a" / "x.png").write_bytes(b"not a png")
    return ["run", _yaml(t, {**BASE, "data": {"source": f"imagefolder:{t / 'imgs'}"}})], "x.png"
def c_garbage_teacher(t):
    (t / "bad.safetensors").write_bytes(b"\x00garbage")
    return ["run", _yaml(t, BASE), "method.name=kd", f"method.teacher=[{t / 'bad.safetensors'}]"], "bad.safetensors"
def c_zero_byte_timm_ckpt(t):
    (t / "w.safetensors").write_bytes(b"")
    return [
        "run",
        _yaml(t, {**BASE, "model": {"name": "timm:resnet10t", "kwargs": {"checkpoint": str(t / "w.safetensors")}}}),
    ], "w.safetensors"
def c_teacher_wrong_classes(t):
    cfg, run = _finished_run(t)
    half = {**BASE, "data": {**BASE["data"], "classes": {"split": "random", "part": "A"}}}
    return ["run", _yaml(t, half), "--out", str(t / "o2"), "method.name=kd", f"method.teacher=[{run}]"], "classes"
def c_out_is_file(t):
    (t / "f").write_text("x")
    return ["run", _yaml(t, BASE), "--out", str(t / "f")], "f"
def c_out_under_file(t):
    (t / "f").write_text("x")
    return ["run", _yaml(t, BASE), "--out", str(t / "f" / "sub")], "f"
def c_other_config(t):
    cfg, run = _finished_run(t)
    return ["run", cfg, "--out", str(t / "out"), "train.epochs=3"], "different config"
def c_corrupt_run_config(t):
    cfg, run = _finished_run(t)
    (run / "config.yaml").write_bytes(b"\xff\xfe: [")
    return ["run", cfg, "--out", str(t / "out")], "config.yaml"
def c_corrupt_summary(t):
    cfg, run = _finished_run(t)
    (run / "summary.json").write_text("{not json")
    return ["run", cfg, "--out", str(t / "out")], "summary.json"
def c_missing_model_file(t):
    cfg, run = _finished_run(t)
    (run / "model.safetensors").unlink()
    return ["run", cfg, "--out", str(t / "out")], "model.safetensors"
def c_empty_state(t):
    cfg, run = _finished_run(t)
    (run / "summary.json").unlink()
    (run / "state.json").write_text("{}")
    return ["run", cfg, "--out", str(t / "out"), "--resume"], "state.json"
def c_report_missing(t):
    return ["report", str(t / "nope")], "not found"
def c_report_empty_summary(t):
    cfg, run = _finished_run(t)
    (run / "summary.json").write_text("{}")
    return ["report", str(t / "out")], "summary.json"
def c_report_list_summary(t):
    cfg, run = _finished_run(t)
    (run / "summary.json").write_text("[]")
    return ["report", str(t / "out")], "summary.json"
def c_report_null_summary(t):
    cfg, run = _finished_run(t)
    (run / "summary.json").write_text("null")
    return ["report", str(t / "out")], "summary.json"
def c_report_string_acc(t):
    cfg, run = _finished_run(t)
    s = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**s, "test_acc": "high"}))
    return ["report", str(t / "out")], "summary.json"
def c_profile_classes(t):
    return ["profile", "mlp:8", "--num-classes", "-1"], "--num-classes"
def c_profile_repeats(t):
    return ["profile", "mlp:8", "--repeats", "0"], "--repeats"
def c_profile_shape(t):
    return ["profile", "mlp:8", "--input-shape", "1x100000x100000"], "input-shape"
def c_profile_bad_shape(t):
    return ["profile", "mlp:8", "--input-shape", "big"], "input-shape"
def c_export_nothing(t):
    cfg, run = _finished_run(t)
    return ["export", str(run)], "--onnx"
def c_pickle_timm_ckpt(t):
    import torch

    class Evil:  # a pickle that would run code: weights_only loading must refuse it
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": Evil()}, t / "w.pth")
    return [
        "run",
        _yaml(t, {**BASE, "model": {"name": "timm:resnet10t", "kwargs": {"checkpoint": str(t / "w.pth")}}}),
    ], "w.pth"
def c_import_missing(t):
    return ["run", _yaml(t, BASE), "--import", "no_such_module_xyz"], "no_such_module_xyz"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("c_")]


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__[2:])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILLAB_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    argv, needle = case(tmp_path)
    assert_refused(argv, needle, tmp_path, capsys)


def test_corpus_size():
    assert len(CASES) >= 40


def test_half_written_metrics_line_does_not_block_resume(tmp_path, capsys):
    cfg, run = _finished_run(tmp_path)
    (run / "summary.json").unlink()
    (run / "model.safetensors").unlink()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "train_')  # a crash in the middle of a write
    assert main(["run", cfg, "--out", str(tmp_path / "out"), "--resume", "--quiet"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]


def test_disk_full_keeps_the_last_commit_and_leaves_no_orphans(tmp_path, capsys, monkeypatch):
    import distillab.engine.checkpoint as ck

    cfg = _yaml(tmp_path, {**BASE, "train": {"epochs": 3, "checkpoint_every": 1, "optim": {"lr": 0.05}}})
    real, calls = ck.save_file, {"n": 0}

    def full_after_first(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the epoch-2 checkpoint: the disk fills up half way
            open(path, "wb").write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ck, "save_file", full_after_first)
    out = tmp_path / "out"
    assert main(["run", cfg, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "disk is full" in err and "\n" not in err
    run = out / "mlp" / "seed0"
    assert not list(run.glob("*.tmp"))
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 1 and (run / state["file"]).is_file()
    monkeypatch.setattr(ck, "save_file", real)
    assert main(["run", cfg, "--out", str(out), "--resume", "--quiet"]) == 0
    assert (run / "model.safetensors").is_file()
