"""A live progress display (rich) for recipes that train many runs."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """One bar for the study (runs done) and one for the current epoch (batches)."""

    def __init__(self, total_runs: int, console: Console | None = None) -> None:
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=console, transient=False)
        self._runs = self._p.add_task("runs", total=total_runs, info="")
        self._epoch = self._p.add_task("", total=1, info="", visible=False)
        self._run_name = ""

    def __enter__(self) -> "RichProgress":
        self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._p.__exit__(*exc)

    def log(self, message: str) -> None:
        self._p.console.print(message)

    def begin_run(self, name: str) -> None:
        self._run_name = name
        self._p.update(self._runs, info=name)

    def end_run(self) -> None:
        self._p.advance(self._runs)

    # --- the trainer's Progress protocol
    def start(self, description: str, total: int) -> None:
        self._p.reset(self._epoch, total=total, description=f"  {description}", info="", visible=True)

    def advance(self, n: int = 1, **fields: Any) -> None:
        info = " ".join(f"{k} {v:.3f}" for k, v in fields.items())
        self._p.update(self._epoch, advance=n, info=info)

    def finish(self) -> None:
        pass
