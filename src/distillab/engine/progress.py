"""Progress displays for recipes that train many runs.

On a terminal: live bars (rich) for the study and the current epoch, with loss, samples/s and
ETA. Redirected to a file or a pipe: one plain line about every 30 s (run, epoch, batch, loss,
samples/s, ETA of the epoch), so a log shows life long before a run ends. ``--quiet``: nothing
but the final table and errors.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """One bar for the study (runs done) and one for the current epoch (batches)."""

    def __init__(self, total_runs: int, console: Console | None = None) -> None:
        # MofN from a field: in weighted mode the study bar's numbers are work estimates, not runs.
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                           TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=console, transient=False)
        self._runs = self._p.add_task("runs", total=total_runs, info="", count=f"0/{total_runs}")
        self._epoch = self._p.add_task("", total=1, info="", visible=False, count="")
        self._t0 = time.perf_counter()
        self._seen = 0
        # Weighted mode (set_weights): the study bar counts estimated work (epochs x cost per
        # epoch of each planned run), advanced every batch, so its ETA covers every remaining run
        # from measured speed instead of counting runs of very different lengths.
        self._weights: dict[str, float] | None = None
        self._per_batch = 0.0
        self._done = 0.0
        self._run_weight = 0.0

    def __enter__(self) -> "RichProgress":
        self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._p.__exit__(*exc)

    def log(self, message: str) -> None:
        self._p.console.print(message)

    def set_weights(self, weights: dict[str, float]) -> None:
        """Estimated work of every run of the study (``"name seed k"`` → epochs x cost per epoch)."""
        self._weights = dict(weights)
        self._p.update(self._runs, total=sum(self._weights.values()) or 1, completed=0,
                       description=f"runs 0/{len(self._weights)}", count="")
        self._n_done = 0

    def skip_run(self, name: str) -> None:
        """A finished run read back: its work leaves the total instead of counting as fast progress."""
        if self._weights is not None and name in self._weights:
            task = self._p.tasks[[t.id for t in self._p.tasks].index(self._runs)]
            self._p.update(self._runs, total=max(1e-9, (task.total or 0) - self._weights.pop(name)))

    def begin_run(self, name: str) -> None:
        self._p.update(self._runs, info=name)
        self._run_weight = self._weights.get(name, 0.0) if self._weights is not None else 0.0
        self._run_done = 0.0

    def end_run(self) -> None:
        if self._weights is None:
            self._p.advance(self._runs)
            task = self._p.tasks[[t.id for t in self._p.tasks].index(self._runs)]
            self._p.update(self._runs, count=f"{task.completed:.0f}/{task.total:.0f}")
            return
        self._done += self._run_weight  # whatever the per-batch estimate missed (a resumed run)
        self._n_done += 1
        self._p.update(self._runs, completed=self._done, description=f"runs {self._n_done}/{len(self._weights)}")

    # --- the trainer's Progress protocol
    def start(self, description: str, total: int) -> None:
        self._p.reset(self._epoch, total=total, description=f"  {description}", info="", visible=True,
                      count=f"0/{total}")
        self._batches = (0, total)
        self._t0, self._seen = time.perf_counter(), 0
        if self._weights is not None:
            epochs = _epochs_of(description)
            self._per_batch = self._run_weight / max(1, epochs * total)

    def advance(self, n: int = 1, **fields: Any) -> None:
        self._seen += int(fields.pop("samples", 0))
        rate = self._seen / max(time.perf_counter() - self._t0, 1e-9)
        info = " ".join(f"{k} {v:.3f}" for k, v in fields.items()) + f" {rate:,.0f} samples/s"
        self._batches = (self._batches[0] + n, self._batches[1])
        self._p.update(self._epoch, advance=n, info=info, count=f"{self._batches[0]}/{self._batches[1]}")
        if self._weights is not None and self._per_batch:
            self._run_done = min(self._run_weight, self._run_done + n * self._per_batch)
            self._p.update(self._runs, completed=self._done + self._run_done)

    def finish(self) -> None:
        pass


def _epochs_of(description: str) -> int:
    """The N of the trainer's "epoch k/N" description."""
    try:
        return int(description.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return 1


class PlainProgress:
    """Plain lines for logs: each finished run, and a status line every ``interval`` seconds."""

    def __init__(self, total_runs: int, console: Console | None = None, interval: float = 30.0) -> None:
        self.console = console or Console()
        self.total, self.done, self.interval = total_runs, 0, interval
        self._run = ""
        self._last = time.perf_counter()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def begin_run(self, name: str) -> None:
        self._run = name

    def end_run(self) -> None:
        self.done += 1

    def start(self, description: str, total: int) -> None:
        self._desc, self._total, self._i, self._seen = description, total, 0, 0
        self._t0 = time.perf_counter()

    def advance(self, n: int = 1, **fields: Any) -> None:
        self._i += n
        self._seen += int(fields.pop("samples", 0))
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self._t0
        eta = elapsed / max(self._i, 1) * (self._total - self._i)
        loss = f" loss {fields['loss']:.4f}" if "loss" in fields else ""
        self.log(f"[run {self.done + 1}/{self.total} {self._run}] {self._desc} batch {self._i}/{self._total}{loss} "
                 f"{self._seen / max(elapsed, 1e-9):,.0f} samples/s, epoch ETA {eta:.0f} s")

    def finish(self) -> None:
        pass


class QuietProgress(PlainProgress):
    """No output at all (``--quiet``)."""

    def log(self, message: str) -> None:
        pass


def make_progress(total_runs: int, console: Console, quiet: bool = False) -> RichProgress | PlainProgress:
    """Bars on a terminal, periodic lines otherwise, nothing when ``quiet``."""
    if quiet:
        return QuietProgress(total_runs, console)
    return RichProgress(total_runs, console) if console.is_terminal else PlainProgress(total_runs, console)
