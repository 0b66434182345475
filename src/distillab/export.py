"""Deployment: a trained student (run folder or model file) to ONNX or TorchScript, checked.

Connectors (regressors, embedding heads, memory banks, fusion modules) never reach the export:
only ``model.safetensors`` — the student alone — is read. By default the exported graph takes a
batch of *raw* images ``(N, C, H, W)`` (any N) as float 0..1 (``input="raw"``) or uint8 0..255
(``input="uint8"``) and normalises them inside the graph with the constants the model was trained
with; ``input="normalized"`` exports the bare network. The ONNX file's ``metadata_props`` (and the
TorchScript file's ``meta.json`` extra file) record the input kind, mean/std and class names.
After writing, the file is run on random inputs and compared with PyTorch's outputs, and the
largest difference is reported.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from distillab.engine.checkpoint import load_model, read_model_spec
from distillab.errors import UserError


InputKind = Literal["raw", "uint8", "normalized"]


class Preprocessed(nn.Module):
    """``model`` behind the input conversion a deployment needs: uint8 → 0..1, then (x − mean) / std."""

    def __init__(self, model: nn.Module, mean: list[float] | None, std: list[float] | None, uint8: bool) -> None:
        super().__init__()
        self.model, self.uint8 = model, uint8
        self.normalize = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uint8:
            x = x.float() / 255.0
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.model(x)


def for_deployment(
    model: nn.Module, spec: dict[str, Any], input: InputKind = "raw"
) -> tuple[nn.Module, dict[str, str]]:
    """The module to export for ``input`` and the metadata to record with it (input kind, layout,
    normalisation, class names)."""
    if input not in ("raw", "uint8", "normalized"):
        raise UserError(f"--input {input!r}: use raw (float 0..1), uint8 (0..255) or normalized")
    norm = spec.get("normalize")
    meta = {"distillab.input": {"raw": "float32 0..1, normalised inside the graph", "uint8": "uint8 0..255, "
                                "scaled and normalised inside the graph", "normalized": "float32, already normalised "
                                "with distillab.mean/std"}[input] if norm else "float32, as the model was trained "
                                "(no normalisation recorded: the Python API feeds your data as is)",
            "distillab.layout": "NCHW", "distillab.model": str(spec.get("name") or spec.get("module", ""))}
    if norm:
        meta["distillab.mean"], meta["distillab.std"] = json.dumps(norm["mean"]), json.dumps(norm["std"])
    if spec.get("classes"):
        meta["distillab.classes"] = json.dumps(list(map(str, spec["classes"])))
    if input == "normalized" or (not norm and input == "raw"):
        return model, meta
    return Preprocessed(
        model, norm["mean"] if norm else None, norm["std"] if norm else None, input == "uint8"
    ).eval(), meta


def _sample(in_shape: tuple[int, ...], n: int, uint8: bool) -> torch.Tensor:
    """Random inputs in the exported graph's own domain."""
    if uint8:
        return torch.randint(0, 256, (n, *in_shape), dtype=torch.uint8)
    return torch.rand(n, *in_shape)


def load_student_spec(run: str | Path) -> tuple[nn.Module, tuple[int, ...], dict[str, Any]]:
    """:func:`load_student` and the model's spec (normalisation, class names)."""
    model, shape = load_student(run)
    return model, shape, read_model_spec(run)[1]


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


def export_onnx(model: nn.Module, in_shape: tuple[int, ...], path: str | Path, opset: int = 17,
                metadata: dict[str, str] | None = None) -> float:
    """Write ``model`` as ONNX with a dynamic batch axis and ``metadata`` in its ``metadata_props``;
    return max |onnxruntime − torch| on a random batch of 4 in the input's domain (onnxruntime
    must be installed: ``pip install distillab[export]``)."""
    path = Path(path)
    _check_target(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'distillab[export]'") from None
    uint8 = getattr(model, "uint8", False)
    x = _sample(in_shape, 2, uint8)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        diff = _write_onnx(model, x, in_shape, tmp, opset, ort)
        if metadata:
            import onnx

            proto = onnx.load(str(tmp))
            for key, value in metadata.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, str(tmp))
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
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        except Exception:  # noqa: BLE001 - fall back to the torch.export-based exporter
            tmp.unlink(missing_ok=True)
            torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
    x4 = _sample(in_shape, 4, x.dtype == torch.uint8)
    with torch.no_grad():
        ref = model(x4).float().numpy()
    got = session.run(None, {session.get_inputs()[0].name: x4.numpy()})[0]
    return float(abs(got - ref).max())


def export_torchscript(model: nn.Module, in_shape: tuple[int, ...], path: str | Path,
                       metadata: dict[str, str] | None = None) -> float:
    """Write ``model`` traced to TorchScript (``metadata`` as the extra file ``meta.json``); return
    max |scripted − eager| on a random batch of 4."""
    path = Path(path)
    _check_target(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uint8 = getattr(model, "uint8", False)
            scripted = torch.jit.trace(model, _sample(in_shape, 2, uint8))
            scripted.save(str(tmp), _extra_files={"meta.json": json.dumps(metadata or {})})
            x4 = _sample(in_shape, 4, uint8)
            with torch.no_grad():
                diff = float((torch.jit.load(str(tmp))(x4) - model(x4)).abs().max())
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - reported as one line, never a half file
        tmp.unlink(missing_ok=True)
        raise UserError(f"TorchScript export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return diff


def check_targets(onnx: str | None, torchscript: str | None) -> None:
    """An export never replaces a file (a run's own model, the user's files), nor writes both formats
    to one name."""
    targets = [(flag, Path(f)) for flag, f in (("--onnx", onnx), ("--torchscript", torchscript)) if f]
    if len(targets) == 2 and targets[0][1].resolve() == targets[1][1].resolve():
        raise UserError("--onnx and --torchscript name the same file; give two names")
    for flag, target in targets:  # an export never replaces a file (a run's own model, the user's files)
        if target.exists() or target.is_symlink():
            raise UserError(f"{flag} {target} already exists; distillab export never replaces a file: remove it "
                            f"or choose a new name")
