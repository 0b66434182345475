"""Results: mean ± std tables over seeds, reports of run folders."""

from distillab.results.stats import csv_table, fmt_pm, markdown_table, mean_std

__all__ = ["csv_table", "fmt_pm", "markdown_table", "mean_std"]
