"""Model cost accounting, the columns of FitNets' Table 5: parameters, multiply-adds, latency,
speed-up and compression rate relative to a reference model."""

from __future__ import annotations

import time
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


@torch.no_grad()
def latency_ms(model: nn.Module, in_shape: tuple[int, int, int], batch: int, repeats: int = 20,
               device: str | torch.device = "cpu") -> float:
    """Median wall time of one forward pass at ``batch`` on ``device``, in milliseconds."""
    model = model.to(device).eval()
    x = torch.randn(batch, *in_shape, device=device)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


@dataclass
class Cost:
    name: str
    params: int
    macs: int
    ms_b1: float
    ms_b256: float


def profile_models(named: list[tuple[str, nn.Module]], in_shape: tuple[int, int, int], repeats: int = 20) -> list[Cost]:
    """Measure each model on the CPU (batch 1 and 256)."""
    out = []
    for name, m in named:
        m = m.cpu()
        out.append(Cost(name, sum(p.numel() for p in m.parameters()), count_macs(m, in_shape),
                        latency_ms(m, in_shape, 1, repeats), latency_ms(m, in_shape, 256, max(3, repeats // 4))))
    return out


def cost_table(costs: list[Cost]) -> tuple[list[str], list[list[str]]]:
    """Rows with speed-up (latency at batch 256) and compression (params) relative to the first model."""
    ref = costs[0]
    header = ["model", "# params", "# mult-adds", "ms @1", "ms @256", "speed-up", "compression"]
    rows = [[c.name, human(c.params), human(c.macs), f"{c.ms_b1:.3f}", f"{c.ms_b256:.2f}",
             f"{ref.ms_b256 / c.ms_b256:.2f}", f"{ref.params / c.params:.2f}"] for c in costs]
    return header, rows


def human(n: float) -> str:
    """1234567 → '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))
