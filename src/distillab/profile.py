"""Model cost accounting, the columns of FitNets' Table 5: parameters, multiply-adds, latency,
speed-up and compression rate relative to a reference model."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
    x = (rng.integers(0, 256, (batch, *in_shape), dtype=np.uint8) if first.type == "tensor(uint8)"  # export --input uint8
         else rng.standard_normal((batch, *in_shape), np.float32))
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
