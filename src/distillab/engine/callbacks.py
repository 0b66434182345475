"""Trainer callbacks in Lightning's shape: one class of named hooks, called by the trainer in list
order. Everything the loop does besides the optimisation itself is one: the training-accuracy
probe, the collapse watchdog, TensorBoard, the metrics file, checkpoints by time, the progress
display, a transfer run's freeze schedule, and the tests' kill hook.

A callback with something to carry over a resume returns it from ``state_dict`` (JSON values); it
is saved in ``state.json`` with the checkpoint and handed back to ``load_state_dict`` on resume.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distillab.engine.checkpoint import save_train_state
from distillab.engine.run_folder import TB_DIR

if TYPE_CHECKING:
    from distillab.data.batch import Batch
    from distillab.engine.trainer import Progress, Trainer

_clock = time.monotonic  # when checkpoints fall due (a module attribute, so a test can drive it)


class Callback:
    """Override the hooks you need; each gets the trainer (``run_dir``, ``cfg``, ``objective``,
    ``optimizer``, ``seed``, ``is_main``)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first remaining epoch (``trainer.start_epoch`` epochs are already done)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains; the objective is put in train mode right after."""

    def on_batch_start(self, trainer: Trainer, batch: Batch) -> None:
        """Before the objective's forward pass on ``batch``."""

    def on_batch_end(self, trainer: Trainer, batch: Batch, loss: torch.Tensor) -> None:
        """After the backward pass (and the optimiser step, at the end of an accumulation window)."""

    def on_train_epoch_end(self, trainer: Trainer, means: dict[str, float]) -> None:
        """The training pass is over: add to the epoch's mean losses (recorded as ``train_<key>``)
        before they are averaged over processes."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """The epoch's record (losses, lr, validation metrics, seconds), in list order: a callback
        may add keys for those after it (the watchdog's ``at_chance``)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, and also when training stopped with an error (close files here)."""

    def state_dict(self) -> dict[str, Any]:
        """What must survive a resume (JSON values); {} for nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned at the resumed checkpoint."""


class TrainAccuracy(Callback):
    """Training accuracy on the (augmented) inputs the student is trained on, read off the student's
    own forward by a hook, so no method has to report logits. Counts stay on the device and are
    read once at the end of the epoch (``train_acc``)."""

    def __init__(self) -> None:
        self._seen: dict[str, torch.Tensor] = {}
        self._hook: Any = None
        self._correct: torch.Tensor | None = None
        self._counted = 0

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        seen = self._seen

        def keep_logits(_m: nn.Module, _inp: Any, out: Any) -> None:
            if "logits" not in seen and isinstance(out, torch.Tensor) and out.ndim == 2:
                seen["logits"] = out.detach()

        self._hook = trainer.objective.eval_model().register_forward_hook(keep_logits)
        self._correct = torch.zeros((), device=trainer.device, dtype=torch.long)
        self._counted = 0

    def on_batch_start(self, trainer: Trainer, batch: Batch) -> None:
        self._seen.clear()

    def on_batch_end(self, trainer: Trainer, batch: Batch, loss: torch.Tensor) -> None:
        logits = self._seen.get("logits")
        if logits is not None and self._correct is not None and batch.y.ndim == 1 and len(logits) == len(batch.y):
            self._correct += (logits.argmax(1) == batch.y).sum()
            self._counted += len(batch.y)

    def on_train_epoch_end(self, trainer: Trainer, means: dict[str, float]) -> None:
        self._remove()
        if self._counted and self._correct is not None:
            means["acc"] = self._correct.item() / self._counted

    def on_fit_end(self, trainer: Trainer) -> None:
        self._remove()  # an epoch stopped by an error leaves no hook on the student

    def _remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class CollapseWatchdog(Callback):
    """The collapse watchdog (engine/watchdog.py) on validation accuracy, else on the epoch's last
    ~512 training examples; marks the record ``at_chance`` (``mode: stop`` ends the run)."""

    def __init__(self, mode: str = "warn") -> None:
        from distillab.engine.watchdog import Watchdog

        self.watchdog = Watchdog(mode)
        self._recent: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def warning(self) -> str | None:
        return self.watchdog.warning

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._recent = []

    def on_batch_end(self, trainer: Trainer, batch: Batch, loss: torch.Tensor) -> None:
        if trainer.val_loader is None:
            left = len(trainer.train_loader) - trainer.batch_index  # batch_index: the batch just trained
            if left <= max(1, -(-512 // max(len(batch), 1))):
                self._recent.append((batch.x.detach(), batch.y))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        from distillab.engine.watchdog import batch_accuracy

        if "val_acc" in record:
            acc, classes, n = record["val_acc"], trainer.val_classes, trainer.val_n
        elif self._recent and self.watchdog.mode != "ignore":
            acc, classes, n = batch_accuracy(trainer.objective.eval_model(), torch.cat([x for x, _ in self._recent]),
                                             torch.cat([y for _, y in self._recent]))
        else:
            return
        if self.watchdog.observe(acc, classes, n, record["epoch"], trainer.cfg.epochs, trainer.label,
                                 trainer.is_main):
            record["at_chance"] = True


class TensorBoardLogger(Callback):
    """Every named loss, accuracy, lr and samples/s of an epoch in ``<run_dir>/tb``, at step = epoch
    (when the optional package is installed: else one note, once)."""

    def __init__(self) -> None:
        self._tb: Any = None
        self._off = False

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._off:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra: say so once, not silently
                from distillab.compat import say_once

                say_once("tensorboard", "note: tensorboard is not installed, so runs write no tb/ event files "
                                        "(metrics.jsonl has every number); pip install 'distillab[tensorboard]'")
                self._off = True
                return
            # purge_step: events of epochs after the resumed checkpoint (written before a crash) are
            # dropped, as their metrics lines are, so curves never zig-zag.
            self._tb = SummaryWriter(log_dir=str(trainer.run_dir / TB_DIR), purge_step=trainer.start_epoch + 1)
        step = record["epoch"]
        for key, value in record.items():
            if key in ("epoch", "seconds") or not isinstance(value, (int, float)):
                continue
            group = "train" if key.startswith("train_") else "val" if key.startswith("val_") else "opt"
            self._tb.add_scalar(f"{group}/{key.split('_', 1)[1] if group != 'opt' else key}", value, step)
        self._tb.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class MetricsWriter(Callback):
    """One JSON line per epoch in ``metrics.jsonl`` (rank 0). Written before the checkpoint: a crash
    in between leaves a line that resume drops."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.is_main:
            with trainer.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class Checkpointer(Callback):
    """The resume checkpoint: after the last epoch; then every ``checkpoint_every`` epochs, or (unset)
    once ``checkpoint_minutes`` have passed since the last one (or the start of this session)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        self._last = _clock()

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        if trainer.is_main and self._due(trainer, epoch):
            self._last = _clock()
            extra: dict[str, Any] = {"seed": trainer.seed}
            states = trainer.callback_states()
            if states:  # only callbacks with something to resume (none of the built-in ones)
                extra["callbacks"] = states
            save_train_state(trainer.run_dir, epoch, trainer.objective.saved_modules(), trainer.optimizer, extra)

    def _due(self, trainer: Trainer, epoch: int) -> bool:
        cfg = trainer.cfg
        if epoch == cfg.epochs:
            return True
        if cfg.checkpoint_every is not None:
            return epoch % cfg.checkpoint_every == 0
        return _clock() - self._last >= 60 * cfg.checkpoint_minutes


class ProgressDisplay(Callback):
    """Drives a :class:`~distillab.engine.trainer.Progress` (a live bar, or plain status lines)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.progress.start(f"epoch {epoch + 1}/{trainer.cfg.epochs}", len(trainer.train_loader))

    def on_batch_end(self, trainer: Trainer, batch: Batch, loss: torch.Tensor) -> None:
        self.progress.advance(1, loss=loss.item(), samples=len(batch))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.progress.finish()


class OnEpochEnd(Callback):
    """Calls ``fn(record)`` after each epoch is logged and checkpointed (the tests kill a run here)."""

    def __init__(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.fn(record)


class EpochStartAdapter(Callback):
    """An object with only ``on_epoch_start(epoch)`` (the older callback shape), as a callback."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        hook = getattr(self.obj, "on_epoch_start", None)
        if hook is not None:
            hook(epoch)


def as_callback(obj: Any) -> Callback:
    """``obj`` itself when it is a :class:`Callback`, else wrapped (:class:`EpochStartAdapter`)."""
    if isinstance(obj, Callback):
        return obj
    if not hasattr(obj, "on_epoch_start"):
        print(f"warning: callback {type(obj).__name__} has no hooks distillab calls", file=sys.stderr)
    return EpochStartAdapter(obj)
