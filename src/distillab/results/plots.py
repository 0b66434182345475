"""Plots in the papers' styles, saved as PNG and SVG (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from typing import Any

from distillab.results.stats import mean_std


def _pyplot() -> Any:
    """matplotlib, imported on first use: it adds ~60 MB to a process that never plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_plot(path_stem: Path, title: str, xlabel: str, ylabel: str, xs: Sequence[float],
              series: dict[str, Sequence[Sequence[float]]], references: dict[str, Sequence[float]] | None = None,
              xticks: Sequence[float] | None = None, xticklabels: Sequence[str] | None = None) -> list[Path]:
    """One line per series (mean over seeds with ±std error bars); references as horizontal bands.

    ``series[name][i]`` holds the per-seed values at ``xs[i]``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = "osD^v<>ph*"
    for k, (name, per_x) in enumerate(series.items()):
        stats = [mean_std(v) for v in per_x]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker=markers[k % len(markers)],
                    capsize=3, label=name)
    for name, vals in (references or {}).items():
        m, s = mean_std(vals)
        ax.axhline(m, color="gray", linestyle="--", linewidth=1, label=f"{name} ({m:.3f})")
        if s:
            ax.axhspan(m - s, m + s, color="gray", alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if xticks is not None:
        ax.set_xticks(list(xticks), labels=list(xticklabels) if xticklabels is not None else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = [path_stem.with_suffix(".png"), path_stem.with_suffix(".svg")]
    for p in out:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return out
