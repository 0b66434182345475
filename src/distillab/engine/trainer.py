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

from distillab.config import OptimConfig, TrainConfig
from distillab.data.batch import BatchSource, as_batch
from distillab.data.loader import epoch_seed
from distillab import distributed
from distillab.engine.checkpoint import load_train_state, read_train_state, save_train_state
from distillab.engine.run_folder import METRICS_FILE, STATE_FILE, TB_DIR
from distillab.errors import UserError
from distillab.methods.base import Objective


_clock = time.monotonic  # when checkpoints fall due (a module attribute, so a test can drive it)


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


def make_optimizer(params: Iterable[nn.Parameter] | list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over parameters or parameter groups (a group's own ``lr`` overrides cfg.lr)."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (a pure function, so resume needs no
    scheduler state): linear warm-up, then constant, step decay at fractions of training, or cosine."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        done = step / total_steps
        return cfg.gamma ** sum(done >= m for m in cfg.milestones)
    t = (step - warm) / max(1, total_steps - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


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
    return {"acc": correct / n, "top5": correct5 / n, "errors": n - correct, "loss": loss / n, "n": n, "classes": classes}


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
        self.progress = progress
        self.on_epoch = on_epoch
        self.callbacks = list(callbacks)  # objects with on_epoch_start(epoch), e.g. a freeze schedule
        from distillab.engine.watchdog import Watchdog

        self.watchdog = Watchdog(cfg.collapse)
        self.label = str(run_dir)  # how the watchdog names the run ("" for the API's temporary folders)
        groups = param_groups if param_groups is not None else [{"params": list(objective.trainable_parameters())}]
        self.optimizer = make_optimizer(groups, cfg.optim)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # TensorBoard event files in <run_dir>/tb when the package is installed (None = if available;
        # $DISTILLAB_TENSORBOARD=0 turns it off).
        if tensorboard is None:
            tensorboard = os.environ.get("DISTILLAB_TENSORBOARD", "1") != "0"
        self._dist = distributed.current()
        self._want_tb = tensorboard and self._dist.is_main
        self._tb: Any = None
        self._forward: Any = objective
        if self._dist.enabled:  # one DDP wrapper over student + connectors; the teacher has no grads
            from torch.nn.parallel import DistributedDataParallel as DDP

            if cfg.sync_bn:
                objective.student = nn.SyncBatchNorm.convert_sync_batchnorm(objective.student)
            dev = _device_of(objective)
            self._forward = DDP(objective, device_ids=[dev.index] if dev.type == "cuda" else None)

    def _metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    def _resume(self) -> int:
        """Load the last committed state if any; drop metric lines of epochs not checkpointed."""
        main = self._dist.is_main  # every rank loads the same committed state; rank 0 writes files
        if read_train_state(self.run_dir) is None:
            if main:
                self._metrics_path().write_text("")
            return 0
        committed = read_train_state(self.run_dir)["epoch"]  # type: ignore[index]
        if committed > self.cfg.epochs:  # a state.json from elsewhere: it would "finish" an untrained run
            raise UserError(f"training state {self.run_dir / STATE_FILE} says epoch {committed} of a "
                            f"{self.cfg.epochs}-epoch run; rerun with --restart to discard it")
        state = load_train_state(self.run_dir, self.objective.saved_modules(), self.optimizer)
        start = int(state["epoch"])
        lines = self._metrics_path().read_text().splitlines() if self._metrics_path().exists() else []
        kept = [ln for ln in lines if _epoch_of(ln) is not None and _epoch_of(ln) <= start]  # type: ignore[operator]
        if sorted(_epoch_of(ln) for ln in kept) != list(range(1, start + 1)) or not all(map(_valid_record, kept)):
            raise UserError(f"{self._metrics_path()} does not hold one valid line for each of the {start} committed "
                            f"epochs; rerun with --restart to discard the run")
        if main:
            self._metrics_path().write_text("".join(ln + "\n" for ln in kept))
        return start

    def fit(self) -> list[dict[str, Any]]:
        """Run the remaining epochs; return all epoch records (including resumed ones)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        start = self._resume()
        distributed.barrier()  # no rank starts before every rank has read the committed state
        self._start = start
        self._last_checkpoint = _clock()
        try:
            self._fit_epochs(start)
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return [json.loads(ln) for ln in self._metrics_path().read_text().splitlines() if ln.strip()]

    def _fit_epochs(self, start: int) -> None:
        cfg = self.cfg
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            losses = self._train_epoch(epoch)
            train_seconds = time.perf_counter() - t0
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                                      **{f"train_{k}": v for k, v in losses.items()}}
            if self.val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                ev = evaluate(self.objective.eval_model(), self.val_loader)
                record.update(val_acc=ev["acc"], val_loss=ev["loss"])
                self._classes, self._n_val = ev["classes"], ev["n"]
            self._watch(record, epoch)
            record["seconds"] = time.perf_counter() - t0
            record["samples_per_s"] = self._samples * self._dist.world / max(train_seconds, 1e-9)
            self._log_tensorboard(record)
            if self._dist.is_main:
                # Metrics first, then the checkpoint: a crash in between leaves a line that resume drops.
                with self._metrics_path().open("a") as f:
                    f.write(json.dumps(record) + "\n")
                if self._checkpoint_due(epoch):
                    self._last_checkpoint = _clock()
                    save_train_state(self.run_dir, epoch + 1, self.objective.saved_modules(), self.optimizer,
                                     {"seed": self.seed})
            if self.progress:
                self.progress.finish()
            if self.on_epoch:
                self.on_epoch(record)

    def _checkpoint_due(self, epoch: int) -> bool:
        """After the last epoch; then every ``checkpoint_every`` epochs, or (unset) once
        ``checkpoint_minutes`` have passed since the last checkpoint (or the start of this session)."""
        cfg = self.cfg
        if epoch + 1 == cfg.epochs:
            return True
        if cfg.checkpoint_every is not None:
            return (epoch + 1) % cfg.checkpoint_every == 0
        return _clock() - self._last_checkpoint >= 60 * cfg.checkpoint_minutes

    def _watch(self, record: dict[str, Any], epoch: int) -> None:
        """The collapse watchdog (engine/watchdog.py) on validation accuracy, else on the epoch's
        last ~512 training examples."""
        from distillab.engine.watchdog import batch_accuracy

        if "val_acc" in record:
            acc, classes, n = record["val_acc"], self._classes, self._n_val
        elif self._recent and self.watchdog.mode != "ignore":
            acc, classes, n = batch_accuracy(self.objective.eval_model(), torch.cat([x for x, _ in self._recent]),
                                             torch.cat([y for _, y in self._recent]))
        else:
            return
        if self.watchdog.observe(acc, classes, n, epoch + 1, self.cfg.epochs, self.label, self._dist.is_main):
            record["at_chance"] = True

    @property
    def warning(self) -> str | None:
        """The watchdog's one line when the run is (still) at chance, else None."""
        return self.watchdog.warning

    def _log_tensorboard(self, record: dict[str, Any]) -> None:
        """Every named loss, accuracy, lr and samples/s of an epoch, at step = epoch."""
        if not self._want_tb:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra: say so once, not silently
                from distillab.compat import say_once

                say_once("tensorboard", "note: tensorboard is not installed, so runs write no tb/ event files "
                                        "(metrics.jsonl has every number); pip install 'distillab[tensorboard]'")
                self._want_tb = False
                return
            # purge_step: events of epochs after the resumed checkpoint (written before a crash) are
            # dropped, as their metrics lines are, so curves never zig-zag.
            self._tb = SummaryWriter(log_dir=str(self.run_dir / TB_DIR), purge_step=self._start + 1)
        step = record["epoch"]
        for key, value in record.items():
            if key in ("epoch", "seconds") or not isinstance(value, (int, float)):
                continue
            group = "train" if key.startswith("train_") else "val" if key.startswith("val_") else "opt"
            self._tb.add_scalar(f"{group}/{key.split('_', 1)[1] if group != 'opt' else key}", value, step)
        self._tb.flush()

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data; returns the mean of each named loss and ``acc``, the
        training accuracy on the inputs the student was trained on (augmented, in train mode).

        The lr schedule and ``progress`` count *optimiser* steps, so with ``accumulate > 1`` each
        step sees the lr the config's schedule gives a true large-batch run."""
        cfg = self.cfg
        n_batches = len(self.train_loader)
        acc = cfg.accumulate  # batches per optimiser step (gradient accumulation)
        steps_per_epoch = -(-n_batches // acc)  # the last window of an epoch may be short
        total = cfg.epochs * steps_per_epoch
        torch.manual_seed(epoch_seed(self.seed, epoch, stream=2))  # dropout and other in-model noise
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(epoch)
        self.objective.train()
        if self.progress:
            self.progress.start(f"epoch {epoch + 1}/{cfg.epochs}", n_batches)
        device = _device_of(self.objective)
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.channels_last:
            self.objective.to(memory_format=torch.channels_last)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        sums: dict[str, float] = {}
        self._samples = 0
        # Training accuracy on the (augmented) inputs the student is trained on, read off the
        # student's own forward by a hook, so no method has to report logits. Counts stay on the
        # device and are read once at the end of the epoch.
        seen: dict[str, torch.Tensor] = {}

        def keep_logits(_m: nn.Module, _inp: Any, out: Any) -> None:
            if "logits" not in seen and isinstance(out, torch.Tensor) and out.ndim == 2:
                seen["logits"] = out.detach()

        hook = self.objective.eval_model().register_forward_hook(keep_logits)
        try:
            correct, counted = self._run_batches(epoch, steps_per_epoch, total, n_batches, device, layout, autocast,
                                                 sums, seen)
        finally:
            hook.remove()
        means = {k: v / n_batches for k, v in sums.items()}
        if counted:  # recorded as train_acc
            means["acc"] = correct.item() / counted
        return distributed.all_mean(means)  # over ranks: the global batch

    def _run_batches(self, epoch: int, steps_per_epoch: int, total: int, n_batches: int, device: torch.device,
                     layout: torch.memory_format, autocast: Any, sums: dict[str, float],
                     seen: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """The optimiser steps of one epoch: adds each named loss into ``sums``; returns the number
        of correct training predictions (a device tensor, read once by the caller) and of labels."""
        cfg, opt, acc = self.cfg, self.optimizer, self.cfg.accumulate
        correct = torch.zeros((), device=device, dtype=torch.long)
        counted = 0
        # The watchdog's probe without validation data: the epoch's last ~512 training examples.
        self._recent: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, item in enumerate(self.train_loader):
            batch = as_batch(item).to(device)
            if cfg.channels_last and batch.x.ndim == 4:
                batch.x = batch.x.contiguous(memory_format=layout)
            step = epoch * steps_per_epoch + i // acc
            if i % acc == 0:
                factor = lr_factor(step, total, steps_per_epoch, cfg.optim)
                for g, base in zip(opt.param_groups, self.base_lrs):
                    g["lr"] = base * factor
                opt.zero_grad(set_to_none=True)
            seen.clear()
            with autocast:
                losses = self._forward(batch, step / total)
            logits = seen.get("logits")
            if logits is not None and batch.y.ndim == 1 and len(logits) == len(batch.y):
                correct += (logits.argmax(1) == batch.y).sum()
                counted += len(batch.y)
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
            if self.val_loader is None and n_batches - i <= max(1, -(-512 // max(len(batch), 1))):
                self._recent.append((batch.x.detach(), batch.y))
            if self.progress:
                self.progress.advance(1, loss=loss.item(), samples=len(batch))
        return correct, counted
