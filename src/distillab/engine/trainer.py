"""The training loop. It knows no method: it sums the objective's named losses, steps the
optimiser on a schedule, evaluates, checkpoints and logs."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from distillab import distributed
from distillab.config import TrainConfig
from distillab.data.batch import BatchSource, as_batch
from distillab.data.loader import epoch_seed
from distillab.engine.callbacks import (
    Callback, Checkpointer, CollapseWatchdog, MetricsWriter, OnEpochEnd, ProgressDisplay, TensorBoardLogger,
    TrainAccuracy, as_callback)
from distillab.engine.checkpoint import load_train_state, read_train_state
from distillab.engine.optim import lr_factor, make_optimizer, set_lrs  # noqa: F401 - lr_factor re-exported
from distillab.engine.run_folder import METRICS_FILE, STATE_FILE
from distillab.errors import UserError
from distillab.methods.base import Objective


def choose_device(requested: str | None = None) -> torch.device:
    """CUDA when present, else CPU; ``$DISTILLAB_DEVICE`` or ``requested`` overrides. Under
    torchrun each process takes the GPU of its ``LOCAL_RANK``."""
    name = requested or os.environ.get("DISTILLAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and distributed.current().enabled:
        name = f"cuda:{distributed.current().local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        from distillab.errors import UserError

        raise UserError(f"device {name!r} unknown: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        from distillab.errors import UserError

        if not torch.cuda.is_available():
            build = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"device {name!r} asked for but {build}; use --device cpu (Python: device='cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def _device_of(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any]) -> dict[str, float]:
    """Top-1 / top-5 accuracy, error count and mean cross-entropy of ``model`` on ``loader``
    (any iterable of batches: :class:`Batch`, ``(x, y)`` pairs or ``{"x", "y"}`` mappings)."""
    was_training = model.training
    model.eval()
    device = _device_of(model)
    correct = correct5 = n = classes = 0
    loss = 0.0
    for item in loader:
        b = as_batch(item).to(device)
        x, y = b.x, b.y
        logits = model(x).float()
        classes = logits.shape[1]
        if y.numel() and (y.min() < 0 or y.max() >= logits.shape[1]):
            raise UserError(f"evaluation label {int(y.max() if y.max() >= logits.shape[1] else y.min())} is outside "
                            f"the model's {logits.shape[1]} classes (0..{logits.shape[1] - 1})")
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        k = min(5, logits.shape[1])
        correct5 += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum().item()
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise UserError("the evaluation data is empty (no batches)")
    return {
        "acc": correct / n,
        "top5": correct5 / n,
        "errors": n - correct,
        "loss": loss / n,
        "n": n,
        "classes": classes,
    }


def _epoch_of(line: str) -> int | None:
    """The epoch of a metrics line; None for a blank or half-written one (a crash mid-write)."""
    try:
        rec = json.loads(line)
        return int(rec["epoch"])
    except (ValueError, KeyError, TypeError, OverflowError):
        return None


def _valid_record(line: str) -> bool:
    """A committed metrics line: a mapping of finite numbers with the epoch's duration (the summary
    adds them up; Infinity or a missing ``seconds`` would end in a traceback or a wrong total)."""
    rec = json.loads(line)
    return (isinstance(rec, dict) and isinstance(rec.get("seconds"), (int, float))
            and all(not isinstance(v, float) or math.isfinite(v) for v in rec.values()))


class Progress(Protocol):
    """What the trainer reports to a progress display."""

    def start(self, description: str, total: int) -> None: ...
    def advance(self, n: int = 1, **fields: Any) -> None: ...
    def finish(self) -> None: ...


class Trainer:
    """Train ``objective`` on ``train`` for ``cfg.epochs``, resuming from ``run_dir`` if possible.

    Reproducibility: model init is seeded by the caller; each epoch's data order, augmentation and
    dropout come from seeds derived from ``(seed, epoch)``, and a checkpoint is written after every
    ``cfg.checkpoint_every`` epochs — so a killed run resumed from its last checkpoint ends with the
    same weights (on CPU) as one never interrupted.

    The loop itself only optimises: logging, checkpoints, the watchdog, progress and freeze
    schedules are :class:`~distillab.engine.callbacks.Callback` objects (``callbacks``: yours, after
    the built-in ones; ``on_epoch``: a function of each epoch's record, called last).
    """

    def __init__(self, objective: Objective, train: BatchSource, cfg: TrainConfig, run_dir: Path, *, seed: int,
                 val: Iterable[Any] | None = None, progress: Progress | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 param_groups: list[dict] | None = None, callbacks: Iterable[Any] = (),
                 tensorboard: bool | None = None) -> None:
        self.objective = objective
        self.train_loader = train
        self.val_loader = val
        self.cfg = cfg
        self.run_dir = run_dir
        self.seed = seed
        self.label = str(run_dir)  # how the watchdog names the run ("" for the API's temporary folders)
        groups = param_groups if param_groups is not None else [{"params": list(objective.trainable_parameters())}]
        self.optimizer = make_optimizer(groups, cfg.optim)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._dist = distributed.current()
        self.is_main = self._dist.is_main
        self.device = _device_of(objective)
        self.start_epoch = 0
        self.batch_index = 0
        self.val_classes = self.val_n = 0
        # TensorBoard event files in <run_dir>/tb when the package is installed (None = if available;
        # $DISTILLAB_TENSORBOARD=0 turns it off).
        if tensorboard is None:
            tensorboard = os.environ.get("DISTILLAB_TENSORBOARD", "1") != "0"
        self.watchdog = CollapseWatchdog(cfg.collapse)
        # In this order: the record is complete (at_chance) before it is logged; yours see it next, so
        # the checkpoint that commits the epoch holds their state after it; the progress line closes
        # last, then ``on_epoch`` (the tests kill a run there, after its checkpoint).
        self.callbacks: list[Callback] = [TrainAccuracy(), self.watchdog]
        self.callbacks += [TensorBoardLogger()] if tensorboard and self.is_main else []
        self.callbacks += [MetricsWriter(), *(as_callback(c) for c in callbacks), Checkpointer()]
        self.callbacks += [ProgressDisplay(progress)] if progress else []
        if on_epoch is not None:
            self.callbacks.append(OnEpochEnd(on_epoch))
        self._forward: Any = objective
        if self._dist.enabled:  # one DDP wrapper over student + connectors; the teacher has no grads
            from torch.nn.parallel import DistributedDataParallel as DDP

            if cfg.sync_bn:
                objective.student = nn.SyncBatchNorm.convert_sync_batchnorm(objective.student)
            dev = _device_of(objective)
            self._forward = DDP(objective, device_ids=[dev.index] if dev.type == "cuda" else None)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def warning(self) -> str | None:
        """The watchdog's one line when the run is (still) at chance, else None."""
        return self.watchdog.warning

    def callback_states(self) -> dict[str, dict[str, Any]]:
        """Each callback's non-empty ``state_dict``, keyed by position and class (saved with a checkpoint)."""
        return {f"{i}.{type(cb).__name__}": st for i, cb in enumerate(self.callbacks) if (st := cb.state_dict())}

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _resume(self) -> int:
        """Load the last committed state if any; drop metric lines of epochs not checkpointed."""
        main = self.is_main  # every rank loads the same committed state; rank 0 writes files
        if read_train_state(self.run_dir) is None:
            if main:
                self.metrics_path.write_text("")
            return 0
        committed = read_train_state(self.run_dir)["epoch"]  # type: ignore[index]
        if committed > self.cfg.epochs:  # a state.json from elsewhere: it would "finish" an untrained run
            raise UserError(f"training state {self.run_dir / STATE_FILE} says epoch {committed} of a "
                            f"{self.cfg.epochs}-epoch run; rerun with --restart to discard it")
        state = load_train_state(self.run_dir, self.objective.saved_modules(), self.optimizer)
        start = int(state["epoch"])
        lines = self.metrics_path.read_text().splitlines() if self.metrics_path.exists() else []
        kept = [ln for ln in lines if _epoch_of(ln) is not None and _epoch_of(ln) <= start]  # type: ignore[operator]
        if sorted(_epoch_of(ln) for ln in kept) != list(range(1, start + 1)) or not all(map(_valid_record, kept)):
            raise UserError(f"{self.metrics_path} does not hold one valid line for each of the {start} committed "
                            f"epochs; rerun with --restart to discard the run")
        if main:
            self.metrics_path.write_text("".join(ln + "\n" for ln in kept))
        saved = state.get("callbacks") if isinstance(state.get("callbacks"), dict) else {}
        for i, cb in enumerate(self.callbacks):
            if f"{i}.{type(cb).__name__}" in saved:
                cb.load_state_dict(saved[f"{i}.{type(cb).__name__}"])
        return start

    def fit(self) -> list[dict[str, Any]]:
        """Run the remaining epochs; return all epoch records (including resumed ones)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_epoch = self._resume()
        distributed.barrier()  # no rank starts before every rank has read the committed state
        self._call("on_fit_start")
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self._fit_epoch(epoch)
        finally:
            self._call("on_fit_end")  # also after an error: files closed, hooks removed
        return [json.loads(ln) for ln in self.metrics_path.read_text().splitlines() if ln.strip()]

    def _fit_epoch(self, epoch: int) -> None:
        """Train one epoch, validate when due, and hand the epoch's record to the callbacks."""
        cfg = self.cfg
        t0 = time.perf_counter()
        losses = self._train_epoch(epoch)
        train_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                                  **{f"train_{k}": v for k, v in losses.items()}}
        if self.val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            ev = evaluate(self.objective.eval_model(), self.val_loader)
            record.update(val_acc=ev["acc"], val_loss=ev["loss"])
            self.val_classes, self.val_n = ev["classes"], ev["n"]
        record["seconds"] = time.perf_counter() - t0
        record["samples_per_s"] = self._samples * self._dist.world / max(train_seconds, 1e-9)
        self._call("on_epoch_end", record)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data; returns the mean of each named loss and ``acc``, the
        training accuracy on the inputs the student was trained on (augmented, in train mode).

        The lr schedule and ``progress`` count *optimiser* steps, so with ``accumulate > 1`` each
        step sees the lr the config's schedule gives a true large-batch run."""
        cfg = self.cfg
        n_batches = len(self.train_loader)
        steps_per_epoch = -(-n_batches // cfg.accumulate)  # the last window of an epoch may be short
        torch.manual_seed(epoch_seed(self.seed, epoch, stream=2))  # dropout and other in-model noise
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        self.device = _device_of(self.objective)
        self._call("on_epoch_start", epoch)  # a freeze schedule pins norm layers before train mode
        self.objective.train()
        if cfg.channels_last:
            self.objective.to(memory_format=torch.channels_last)
        sums: dict[str, float] = {}
        self._samples = 0
        self._run_batches(epoch, steps_per_epoch, cfg.epochs * steps_per_epoch, n_batches, sums)
        means = {k: v / n_batches for k, v in sums.items()}
        self._call("on_train_epoch_end", means)  # train_acc
        return distributed.all_mean(means)  # over ranks: the global batch

    def _run_batches(self, epoch: int, steps_per_epoch: int, total: int, n_batches: int,
                     sums: dict[str, float]) -> None:
        """The optimiser steps of one epoch: adds each named loss into ``sums``."""
        cfg, opt, acc = self.cfg, self.optimizer, self.cfg.accumulate  # acc: batches per optimiser step
        device = self.device
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        for i, item in enumerate(self.train_loader):
            self.batch_index = i
            batch = as_batch(item).to(device)
            if cfg.channels_last and batch.x.ndim == 4:
                batch.x = batch.x.contiguous(memory_format=layout)
            step = epoch * steps_per_epoch + i // acc
            if i % acc == 0:
                set_lrs(opt, self.base_lrs, lr_factor(step, total, steps_per_epoch, cfg.optim))
                opt.zero_grad(set_to_none=True)
            self._call("on_batch_start", batch)
            with autocast:
                losses = self._forward(batch, step / total)
            loss = sum(v.float() for v in losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1} step {i}; lower the learning "
                                         f"rate (train.optim.lr; lr= in the Python API) or clip gradients "
                                         f"(train.optim.grad_clip; grad_clip=), then train again (on the command "
                                         f"line with --restart, which discards the unfinished run)")
            # The last window of an epoch may be short: scale by its real length.
            window = min(acc, n_batches - (i - i % acc))
            (loss / window).backward()
            if (i + 1) % acc == 0 or i + 1 == n_batches:
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self._params, cfg.optim.grad_clip)
                opt.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            self._samples += len(batch)
            self._call("on_batch_end", batch, loss)
