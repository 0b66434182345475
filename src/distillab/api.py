"""The Python API: everything the CLI trains, with your own modules and datasets.

>>> import distillab                                                   # doctest: +SKIP
>>> result = distillab.distill(my_student, my_teacher, my_train_set, method="kd",
...                            temperature=4, alpha=0.9, epochs=20, val_data=my_val_set)
>>> result.model            # the trained student (the same object you passed in)
>>> distillab.evaluate(result.model, my_test_set)["acc"]

``train_data`` is any map-style ``torch.utils.data.Dataset`` yielding ``(image, label)`` (seeded
per-epoch shuffling, example indices for index-based methods such as CRD, exact resume), or any
iterable of batches with ``len()`` — e.g. your own ``DataLoader`` (used as is: its own shuffling,
no resume guarantee). ``method`` is any name from ``distillab list methods``; its options are
that method's config keys (``distillab.methods.METHODS[name].config``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from distillab.config import OptimConfig, TrainConfig, format_validation_error
from distillab.data.batch import as_batch
from distillab.data.dataset_loader import DatasetLoader
from distillab.engine.trainer import Trainer, choose_device
from distillab.engine.trainer import evaluate as _evaluate
from distillab.errors import UserError
from distillab.methods import Context, MethodConfig, Objective, Teacher, build_objective


@dataclass
class FitResult:
    """What :func:`distill` / :func:`train` return."""

    model: nn.Module                  # the trained student (the module passed in, trained in place)
    objective: Objective              # student + connectors (regressors, memory banks, …)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    val: dict[str, float] | None = None  # final validation metrics, when val_data was given


def _loader(data: Any, batch_size: int, seed: int, shuffle: bool, num_workers: int) -> Iterable[Any]:
    # A list/tuple is taken as ready batches (the docstring's "iterable of batches"), not a dataset.
    if (hasattr(data, "__getitem__") and hasattr(data, "__len__")
            and not isinstance(data, (torch.utils.data.DataLoader, list, tuple))):
        return DatasetLoader(data, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers)
    if not hasattr(data, "__iter__") or not hasattr(data, "__len__"):
        raise TypeError(f"train/val data must be a map-style Dataset or an iterable of batches with len(), "
                        f"got {type(data).__name__}")
    return data


def _method_config(method: str, options: dict[str, Any]) -> Any:
    """The method's config, validated exactly as a YAML ``method:`` section is."""
    try:
        return TypeAdapter(MethodConfig).validate_python({"name": method, **options})
    except ValidationError as e:
        raise UserError(format_validation_error(e, "distill")) from None


def distill(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train_data: Any, *,
            method: str = "kd", val_data: Any = None, epochs: int = 10, batch_size: int = 128,
            lr: float = 0.05, optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 0.0,
            schedule: str = "cosine", warmup_epochs: float = 0.0, precision: str = "fp32",
            train_config: TrainConfig | dict[str, Any] | None = None, seed: int = 0,
            run_dir: str | Path | None = None, device: str | torch.device | None = None,
            num_workers: int = 0, **method_options: Any) -> FitResult:
    """Train ``student`` with ``method`` against ``teacher`` (a module, a list of modules = an
    ensemble, or None for ``method="supervised"``) and return the trained student.

    ``run_dir``: where checkpoints and ``metrics.jsonl`` go; an interrupted call with the same
    ``run_dir`` resumes from its last epoch. None = a temporary folder, removed afterwards.
    ``train_config`` replaces the optimiser/schedule keyword arguments with a full
    :class:`~distillab.config.TrainConfig`.
    """
    dev = choose_device(str(device) if device is not None else None)
    cfg = _method_config(method, method_options)
    if isinstance(train_config, dict):
        train_config = TrainConfig.model_validate(train_config)
    tcfg = train_config or TrainConfig(
        epochs=epochs, precision=precision,  # type: ignore[arg-type]
        optim=OptimConfig(name=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,  # type: ignore[arg-type]
                          schedule=schedule, warmup_epochs=warmup_epochs))  # type: ignore[arg-type]
    train = _loader(train_data, batch_size, seed, shuffle=True, num_workers=num_workers)
    val = _loader(val_data, batch_size, seed, shuffle=False, num_workers=num_workers) if val_data is not None else None
    probe = as_batch(next(iter(train)))
    student.to(dev)
    t = None
    if teacher is not None:
        members = [teacher] if isinstance(teacher, nn.Module) else list(teacher)
        t = Teacher([m.to(dev) for m in members])
    _check_classes(student, t, train, probe)
    ctx = Context(in_shape=tuple(probe.x.shape[1:]), teacher=t, num_train=getattr(train, "num_examples", 0),
                  epochs=tcfg.epochs)
    torch.manual_seed(seed)  # connectors' init
    objective = build_objective(cfg, student, ctx).to(dev)
    with tempfile.TemporaryDirectory(prefix="distillab-") as tmp:
        folder = Path(run_dir) if run_dir is not None else Path(tmp)
        _claim_api_run(folder, cfg, tcfg, seed, objective)
        from distillab.engine.run import RunLock

        lock = RunLock(folder)
        try:
            trainer = Trainer(objective, train, tcfg, folder, seed=seed, val=val)  # type: ignore[arg-type]
            history = trainer.fit()
        finally:
            lock.release()
    metrics = _evaluate(objective.eval_model(), val) if val is not None else None
    return FitResult(student, objective, history, metrics)


@torch.no_grad()
def _check_classes(student: nn.Module, teacher: Teacher | None, train: Any, probe: Any) -> None:
    """The student's classes (its output size on the first batch) bound every label, and every
    teacher predicts as many classes — else the loss fails deep inside torch."""
    from distillab.engine.trainer import _device_of

    dev = _device_of(student)
    was = student.training
    student.eval()  # no BatchNorm statistics updated, no dropout drawn
    try:
        classes = student(probe.x[:2].to(dev)).shape[-1]
    finally:
        student.train(was)
    for i, m in enumerate(teacher.members if teacher is not None else []):
        tc = m(probe.x[:2].to(dev)).shape[-1]
        if tc != classes:
            raise UserError(f"teacher {i} predicts {tc} classes, the student {classes}; distil between models of "
                            f"the same classes")
    y = torch.as_tensor(probe.y)
    if y.numel() and (y.min() < 0 or y.max() >= classes):
        raise UserError(f"a training label is {int(y.max() if y.max() >= classes else y.min())}, outside the "
                        f"student's {classes} classes (0..{classes - 1})")
    if isinstance(train, DatasetLoader):
        train.check_labels_below(classes)


def _claim_api_run(folder: Path, cfg: Any, tcfg: TrainConfig, seed: int, objective: Objective) -> None:
    """Record what a ``run_dir`` trains (method and training config, seed, parameter shapes) and
    refuse to resume a folder that holds something else — e.g. the previous call of a sweep."""
    import json

    from distillab.engine.checkpoint import atomic_write_text

    what = {"method": cfg.model_dump(mode="json", exclude={"teacher"}), "train": tcfg.model_dump(mode="json"),
            "seed": seed, "shapes": {k: list(v.shape) for k, v in objective.state_dict().items()
                                     if not k.startswith("teacher.")}}
    record = folder / "api_run.json"
    if record.is_file():
        try:
            before = json.loads(record.read_text())
        except ValueError:
            before = None
        if before != json.loads(json.dumps(what)):
            raise UserError(f"run_dir {folder} holds another run (different method, training settings, seed or "
                            f"model); give each call its own run_dir, or delete it")
        return
    if folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"run_dir {folder} is not empty and was not written by distillab.distill; use a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(what))


def train(model: nn.Module, train_data: Any, **kwargs: Any) -> FitResult:
    """Plain supervised training (cross-entropy; ``label_smoothing``, ``mixup_alpha`` options)
    with the same arguments as :func:`distill`."""
    return distill(model, None, train_data, method="supervised", **kwargs)


def evaluate(model: nn.Module, data: Any, batch_size: int = 512) -> dict[str, float]:
    """Top-1/top-5 accuracy, error count and mean cross-entropy of ``model`` on a dataset or loader."""
    return _evaluate(model, _loader(data, batch_size, 0, shuffle=False, num_workers=0))


def run_study(config: dict[str, Any], out: str | Path, *, resume: bool = False, quiet: bool = True) -> str:
    """Run a recipe from a config mapping (what a YAML file holds) into ``out``; return the
    results table as Markdown. Finished runs in ``out`` are read back, never retrained."""
    from rich.console import Console

    from distillab.cli import run_config

    console = Console(quiet=quiet)
    return run_config(dict(config), Path(out), console, "config", resume)
