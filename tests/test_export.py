"""Deployment: a run's student exported to ONNX / TorchScript matches PyTorch on real inputs, and
`profile` reads run folders and ONNX files with medians and inter-quartile ranges."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from distillab.cli import main
from distillab.config import DataConfig
from distillab.data import prepare_data
from distillab.export import load_student


@pytest.fixture(scope="module")
def kd_run(tmp_path_factory):
    """A small CRD-distilled CNN (it has connectors: embedding heads and memory banks)."""
    tmp = tmp_path_factory.mktemp("runs")
    cfg = {"recipe": "benchmark", "data": {"source": "digits", "val_size": 200, "batch_size": 64}, "seeds": [0],
           "teacher": {"model": {"name": "cnn:8-16"}, "train": {"epochs": 2}},
           "student": {"model": {"name": "cnn:4-8"}, "train": {"epochs": 2}},
           "methods": {"CRD": {"name": "crd", "nce_k": 32}}}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp / "c.yaml"), "--out", str(tmp / "out")]) == 0
    return tmp / "out"


def test_onnx_and_torchscript_match_pytorch_on_real_images(kd_run, tmp_path, capsys):
    run = kd_run / "CRD" / "seed0"
    assert main(["export", str(run), "--onnx", str(tmp_path / "s.onnx"), "--torchscript", str(tmp_path / "s.pt"),
                 "--input", "normalized"]) == 0
    model, shape = load_student(run)
    assert shape == (1, 8, 8)
    x = next(iter(prepare_data(DataConfig(source="digits", val_size=200), 0).test)).x  # real, normalised digits
    with torch.no_grad():
        ref = model(x).numpy()
    session = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()
    scripted = torch.jit.load(str(tmp_path / "s.pt"))
    assert torch.allclose(scripted(x), torch.from_numpy(ref), atol=1e-5)
    # Only the student is exported: no CRD embedding heads or memory banks in the graph.
    import onnx

    names = {t.name for t in onnx.load(str(tmp_path / "s.onnx")).graph.initializer}
    assert not any("crd" in n or "memory" in n for n in names)


def test_export_takes_raw_images_and_says_how(kd_run, tmp_path, capsys):
    """Issue #25: by default the graph normalises raw 0..1 (or uint8) images itself, its metadata
    names the input, mean/std and classes, and its accuracy on raw test images is PyTorch's."""
    import json

    import onnx

    run = kd_run / "CRD" / "seed0"
    assert (
        main(["export", str(run), "--onnx", str(tmp_path / "raw.onnx"), "--torchscript", str(tmp_path / "raw.pt")]) == 0
    )
    assert main(["export", str(run), "--onnx", str(tmp_path / "u8.onnx"), "--input", "uint8"]) == 0
    test = prepare_data(DataConfig(source="digits", val_size=200), 0).test
    model, _ = load_student(run)
    with torch.no_grad():
        torch_acc = float(torch.cat([(model(b.x).argmax(1) == b.y) for b in test]).float().mean())
    raw_u8 = test.x.cpu()  # the uint8 images as stored, no normalisation
    for name, feed in (("raw.onnx", raw_u8.float().numpy() / 255.0), ("u8.onnx", raw_u8.numpy())):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        pred = session.run(None, {"input": feed})[0].argmax(1)
        onnx_acc = float((torch.from_numpy(pred) == test.y.cpu()).float().mean())
        assert abs(onnx_acc - torch_acc) <= 0.001, (name, onnx_acc, torch_acc)
    assert torch_acc > 0.3  # a trained model, well above chance
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "raw.onnx")).metadata_props}
    assert meta["distillab.input"].startswith("float32 0..1") and len(json.loads(meta["distillab.mean"])) == 1
    assert json.loads(meta["distillab.classes"])[:3] == ["0", "1", "2"]
    extra = {"meta.json": ""}
    scripted = torch.jit.load(str(tmp_path / "raw.pt"), _extra_files=extra)
    assert json.loads(extra["meta.json"])["distillab.std"] == meta["distillab.std"]
    assert (scripted(raw_u8.float()[:64] / 255).argmax(1) == torch.from_numpy(
        ort.InferenceSession(str(tmp_path / "raw.onnx")).run(None, {"input": raw_u8.float()[:64].numpy() / 255})[0]
    ).argmax(1)).all()
    capsys.readouterr()
    assert main(["profile", str(run), str(tmp_path / "raw.onnx"), str(tmp_path / "u8.onnx"), "--repeats", "2",
                 "--data", "digits"]) == 0
    out = capsys.readouterr().out
    accs = [
        float(ln.rstrip(" |").rsplit("|", 1)[1])
        for ln in out.splitlines()
        if ln.startswith("| ") and "test acc" not in ln
    ]
    assert len(accs) == 3 and max(accs) - min(accs) <= 0.1  # raw images through onnxruntime: PyTorch's accuracy


def test_profile_reads_runs_and_onnx_files(kd_run, tmp_path, capsys):
    run = kd_run / "CRD" / "seed0"
    assert main(["export", str(run), "--onnx", str(tmp_path / "s.onnx")]) == 0
    capsys.readouterr()
    assert (
        main(["profile", str(kd_run / "teacher" / "seed0"), str(run), str(tmp_path / "s.onnx"), "--repeats", "5"]) == 0
    )
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ")][1:]
    assert len(rows) == 3 and "IQR" in out
    cells = rows[1].split("|")
    med, iqr = cells[4].strip().split(" ", 1)
    lo, hi = (float(v) for v in iqr.strip("[]").split("–"))
    assert lo <= float(med) <= hi


@pytest.mark.parametrize("argv, needle", [
    (["export", "RUN"], "--onnx"),
    (["export", "RUN", "--onnx", "/no/such/dir/s.onnx"], "does not exist"),
    (["export", "/no/such/run", "--onnx", "x.onnx"], "not found"),
    (["profile", "mlp:8", "--repeats", "0"], "--repeats"),
    (["profile", "mlp:8", "--num-classes", "-1"], "--num-classes"),
    (["profile", "mlp:8", "--input-shape", "1x99999x99999"], "2048"),
    (["profile", "missing.onnx"], "not found"),
])
def test_export_and_profile_bad_input(argv, needle, kd_run, capsys):
    argv = [str(kd_run / "CRD" / "seed0") if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err
