"""Deployment: a trained student (run folder or model file) to ONNX or TorchScript, checked.

Connectors (regressors, embedding heads, memory banks, fusion modules) never reach the export:
only ``model.safetensors`` — the student alone — is read. The exported graph takes a batch of
normalised images ``(N, C, H, W)`` (any N) and returns logits; after writing, the file is run
on random inputs and compared with PyTorch's outputs, and the largest difference is reported.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from distillab.engine.checkpoint import load_model, read_model_spec
from distillab.errors import UserError


def load_student(run: str | Path) -> tuple[nn.Module, tuple[int, int, int]]:
    """The student of a run folder (or a ``model.safetensors``) in eval mode, and its input shape."""
    _, spec = read_model_spec(run)
    model = load_model(run).eval()
    if "in_shape" in spec:  # API runs record their input shape as seen
        return model, tuple(spec["in_shape"])  # type: ignore[return-value]
    return model, (spec["in_chans"], spec["img_size"], spec["img_size"])


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name such as student.onnx")
    if not path.parent.is_dir():
        raise UserError(f"folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"folder {path.parent} is not writable")


def export_onnx(model: nn.Module, in_shape: tuple[int, ...], path: str | Path, opset: int = 17) -> float:
    """Write ``model`` as ONNX with a dynamic batch axis; return max |onnxruntime − torch| on a
    random batch of 4 (onnxruntime must be installed: ``pip install distillab[export]``)."""
    path = Path(path)
    _check_target(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'distillab[export]'") from None
    x = torch.randn(2, *in_shape)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        diff = _write_onnx(model, x, in_shape, tmp, opset, ort)
        os.replace(tmp, path)
    except UserError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 - an exporter failure is reported, never a half file
        tmp.unlink(missing_ok=True)
        raise UserError(f"ONNX export of this model failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        f"try --torchscript") from None
    return diff


def _write_onnx(model: nn.Module, x: torch.Tensor, in_shape: tuple[int, ...], tmp: Path, opset: int,
                ort: object) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated but exact and fast here
        try:
            torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"], opset_version=opset,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        except Exception:  # noqa: BLE001 - fall back to the torch.export-based exporter
            tmp.unlink(missing_ok=True)
            torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    x4 = torch.randn(4, *in_shape)
    with torch.no_grad():
        ref = model(x4).float().numpy()
    got = session.run(None, {session.get_inputs()[0].name: x4.numpy()})[0]
    return float(abs(got - ref).max())


def export_torchscript(model: nn.Module, in_shape: tuple[int, ...], path: str | Path) -> float:
    """Write ``model`` traced to TorchScript; return max |scripted − eager| on a random batch of 4."""
    path = Path(path)
    _check_target(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.trace(model, torch.randn(2, *in_shape))
            scripted.save(str(tmp))
            x4 = torch.randn(4, *in_shape)
            with torch.no_grad():
                diff = float((torch.jit.load(str(tmp))(x4) - model(x4)).abs().max())
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - reported as one line, never a half file
        tmp.unlink(missing_ok=True)
        raise UserError(f"TorchScript export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return diff
