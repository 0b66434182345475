"""Model cost accounting, the columns of FitNets' Table 5: parameters, multiply-adds, latency,
speed-up and compression rate relative to a reference model."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass on one image (FLOPs / 2 as counted by PyTorch)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    x = torch.zeros(1, *in_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was)
    return counter.get_total_flops() // 2


def _quantiles(times: list[float]) -> tuple[float, float, float]:
    """Median, first and third quartile (ms) of wall times in seconds."""
    t = sorted(1000 * v for v in times)
    q = lambda f: t[min(len(t) - 1, int(f * (len(t) - 1) + 0.5))]  # noqa: E731 - nearest rank
    return q(0.5), q(0.25), q(0.75)


@torch.no_grad()
def latency_stats(model: nn.Module, in_shape: tuple[int, int, int], batch: int, repeats: int = 20,
                  device: str | torch.device = "cpu", warmup: int = 3) -> tuple[float, float, float]:
    """(median, q1, q3) of the wall time of one forward pass at ``batch``, in ms, after ``warmup``
    untimed passes. The inter-quartile range says how much a busy machine moved the figure."""
    model = model.to(device).eval()
    x = torch.randn(batch, *in_shape, device=device)
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(max(1, repeats)):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return _quantiles(times)


def latency_ms(model: nn.Module, in_shape: tuple[int, int, int], batch: int, repeats: int = 20,
               device: str | torch.device = "cpu") -> float:
    """Median wall time of one forward pass at ``batch`` on ``device``, in milliseconds."""
    return latency_stats(model, in_shape, batch, repeats, device)[0]


def onnx_latency_stats(path: str, in_shape: tuple[int, int, int], batch: int, repeats: int = 20,
                       warmup: int = 3) -> tuple[float, float, float]:
    """(median, q1, q3) ms of one onnxruntime CPU inference at ``batch``."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    rng = np.random.default_rng(0)
    x = (
        rng.integers(0, 256, (batch, *in_shape), dtype=np.uint8)
        if first.type == "tensor(uint8)"  # export --input uint8
        else rng.standard_normal((batch, *in_shape), np.float32)
    )
    feed = {first.name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return _quantiles(times)


def batch_1_and_256(stats: "Callable[[int, int], tuple[float, float, float]]", repeats: int
                    ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``stats(batch, repeats)`` at batch 1 (``repeats``) and 256 (a quarter, at least 5)."""
    return stats(1, repeats), stats(256, max(5, repeats // 4))


@dataclass
class Cost:
    name: str
    params: int
    macs: int | None
    ms_b1: float
    ms_b256: float
    iqr_b1: tuple[float, float] = (float("nan"), float("nan"))
    iqr_b256: tuple[float, float] = (float("nan"), float("nan"))


def profile_models(named: list[tuple[str, nn.Module]], in_shape: tuple[int, int, int], repeats: int = 20) -> list[Cost]:
    """Measure each model on the CPU (batch 1 and 256): median and inter-quartile range."""
    out = []
    for name, m in named:
        m = m.cpu()
        b1, b256 = batch_1_and_256(lambda b, r: latency_stats(m, in_shape, b, r), repeats)
        out.append(Cost(name, sum(p.numel() for p in m.parameters()), count_macs(m, in_shape),
                        b1[0], b256[0], b1[1:], b256[1:]))
    return out


def _ms(median: float, iqr: tuple[float, float], digits: int) -> str:
    if iqr[0] != iqr[0]:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{iqr[0]:.{digits}f}–{iqr[1]:.{digits}f}]"


def cost_table(costs: list[Cost]) -> tuple[list[str], list[list[str]]]:
    """Rows with speed-up (latency at batch 256) and compression (params) relative to the first
    model; latencies are medians with the inter-quartile range in brackets."""
    ref = costs[0]
    header = ["model", "# params", "# mult-adds", "ms @1 [IQR]", "ms @256 [IQR]", "speed-up", "compression"]
    rows = [[c.name, human(c.params), human(c.macs) if c.macs is not None else "—", _ms(c.ms_b1, c.iqr_b1, 3),
             _ms(c.ms_b256, c.iqr_b256, 2), f"{ref.ms_b256 / c.ms_b256:.2f}", f"{ref.params / c.params:.2f}"]
            for c in costs]
    return header, rows


def human(n: float) -> str:
    """1234567 → '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


# ---------------------------------------------------------------- `distillab profile`: one item → one row
def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1x28x28"`` → (1, 28, 28): one square image's channels and sides (``--input-shape``)."""
    from distillab.errors import UserError

    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input-shape {text!r} must look like CxHxW, e.g. 1x28x28") from None
    if h != w or min(c, h) <= 0:
        raise UserError(f"--input-shape {text!r}: need square images with positive sizes")
    if c > 64 or h > 2048:
        raise UserError(f"--input-shape {text!r}: at most 64 channels and 2048 pixels a side")
    return c, h, w


def profile_item(arg: str, input_shape: str = "1x28x28", num_classes: int = 10, repeats: int = 20,
                 runtime: str = "torch") -> Cost:
    """A model name, a run folder / model file, or an ONNX file → its cost row."""
    import tempfile

    from distillab.errors import UserError

    path = Path(arg)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UserError(f"ONNX file not found: {path}")
        try:
            import onnx
            import onnxruntime  # noqa: F401 - needed to time it
        except ImportError:
            raise UserError(
                "profiling ONNX files needs onnx and onnxruntime: pip install 'distillab[export]'"
            ) from None
        try:
            graph = onnx.load(str(path)).graph
        except Exception as e:  # noqa: BLE001 - onnx raises many types for a bad file
            raise UserError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
        if not graph.input:
            raise UserError(f"{path} has no graph input to feed")
        params = sum(math.prod(t.dims) for t in graph.initializer)
        all_dims = list(graph.input[0].type.tensor_type.shape.dim)
        if all_dims and len(all_dims) != 4:  # profile feeds (N, C, H, W) image batches
            raise UserError(f"{path} takes a rank-{len(all_dims)} input; profile times image models "
                            f"(N x C x H x W)")
        dims = [d.dim_value for d in all_dims][1:]
        shape = tuple(dims) if len(dims) == 3 and all(dims) else parse_shape(input_shape)
        try:
            b1, b256 = batch_1_and_256(lambda b, r: onnx_latency_stats(str(path), shape, b, r), repeats)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (unknown op, bad graph)
            first = str(e).splitlines()[0][:160] if str(e) else ""
            raise UserError(f"{path} cannot be run by onnxruntime ({type(e).__name__}: {first})") from None
        return Cost(path.name, params, None, b1[0], b256[0], b1[1:], b256[1:])
    if path.is_dir() or path.suffix == ".safetensors":
        from distillab.export import load_student

        model, shape = load_student(path)
        name = str(path)
    else:
        from distillab.models import create_model

        shape = parse_shape(input_shape)
        model, name = create_model(arg, num_classes, shape[0], shape[1]).eval(), arg
    params = sum(p.numel() for p in model.parameters())
    if runtime == "onnxruntime":
        from distillab.export import export_onnx

        with tempfile.TemporaryDirectory() as d:
            export_onnx(model, shape, Path(d) / "m.onnx")
            b1, b256 = batch_1_and_256(lambda b, r: onnx_latency_stats(str(Path(d) / "m.onnx"), shape, b, r),
                                       repeats)
    else:
        b1, b256 = batch_1_and_256(lambda b, r: latency_stats(model, shape, b, r), repeats)
    return Cost(name, params, count_macs(model, shape), b1[0], b256[0], b1[1:], b256[1:])


def profile_accuracy(item: str, source: str, data_dir: str | None) -> float | None:
    """Test accuracy of a run folder / model file (PyTorch, its own normalisation) or of an ONNX
    file (onnxruntime, fed what its metadata says it takes: raw 0..1, uint8 or normalised
    images); None for a bare model name."""
    import json

    import torch

    from distillab.config import DataConfig
    from distillab.data import prepare_data

    path = Path(item)
    bundle = prepare_data(DataConfig(source=source, data_dir=data_dir, val_size=0), 0)
    raw, labels = bundle.test.x.cpu(), bundle.test.y.cpu()  # uint8 images as stored, no normalisation
    if path.suffix == ".onnx":
        import numpy as np
        import onnx
        import onnxruntime as ort

        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        kind = meta.get("distillab.input", "")
        preds = []
        for i in range(0, len(raw), 500):
            x = raw[i:i + 500]
            if first.type == "tensor(uint8)":
                feed = x.numpy()
            elif kind.startswith("float32 0..1") or "distillab.mean" not in meta:
                feed = x.float().numpy() / 255.0
            else:  # exported --input normalized: normalise as its metadata says
                mean = np.array(json.loads(meta["distillab.mean"]), np.float32).reshape(1, -1, 1, 1)
                std = np.array(json.loads(meta["distillab.std"]), np.float32).reshape(1, -1, 1, 1)
                feed = (x.float().numpy() / 255.0 - mean) / std
            preds.append(torch.from_numpy(session.run(None, {first.name: feed})[0]).argmax(1))
        return float((torch.cat(preds) == labels).float().mean())
    if path.is_dir() or path.suffix == ".safetensors":
        from distillab.engine.checkpoint import read_model_spec
        from distillab.engine.trainer import evaluate
        from distillab.export import load_student

        model, _ = load_student(path)
        norm = read_model_spec(path)[1].get("normalize")
        bundle = prepare_data(DataConfig(source=source, data_dir=data_dir, val_size=0), 0, normalization=norm)
        return evaluate(model, bundle.test)["acc"]
    return None


def latency_note(runtime: str, repeats: int, reference: str) -> str:
    """The footnote under ``distillab profile``'s table: how each column was measured."""
    return (
        f"\nCPU latency ({runtime}; .onnx files always in onnxruntime; their BatchNorm layers, if any, "
        "are folded into the convs, hence fewer params): median [inter-quartile range] over "
        f"{repeats} repeats at batch 1, "
        f"max(5, repeats/4) at 256, after 3 warm-up passes; speed-up = latency@256 of {reference} / latency@256, "
        f"compression = params of {reference} / params."
    )
