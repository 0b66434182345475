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
    warning: str | None = None  # the collapse watchdog's one line, when the run ended at chance


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


def _grad_clip(grad_clip: float | str | None, distilling: bool) -> float | None:
    """``"auto"``: clip the global gradient norm at 5.0 when a teacher is distilled, none for plain
    training. A distillation term's logit gradient is up to T times cross-entropy's, so at the same
    lr its steps are several times larger: nets without normalisation layers diverge to chance
    (a plain CNN: 10 % with KD at T = 4, lr 0.05; 74-87 % with clipping at 5.0)."""
    if grad_clip == "auto":
        return 5.0 if distilling else None
    if grad_clip is not None and (isinstance(grad_clip, str) or not grad_clip > 0):
        raise UserError(f"grad_clip must be a positive number, None or 'auto' (got {grad_clip!r})")
    return grad_clip  # type: ignore[return-value]


def distill(student: nn.Module, teacher: nn.Module | Sequence[nn.Module] | None, train_data: Any, *,
            method: str = "kd", val_data: Any = None, test_data: Any = None, epochs: int = 10,
            batch_size: int = 128, lr: float = 0.05, optimizer: str = "sgd", momentum: float = 0.9,
            weight_decay: float = 0.0, schedule: str = "cosine", warmup_epochs: float = 0.0,
            grad_clip: float | str | None = "auto", precision: str = "fp32",
            train_config: TrainConfig | dict[str, Any] | None = None, seed: int = 0,
            run_dir: str | Path | None = None, device: str | torch.device | None = None,
            num_workers: int = 0, model_name: str | None = None, model_kwargs: dict[str, Any] | None = None,
            class_names: Sequence[str] | None = None, progress: bool | None = None,
            callbacks: Sequence[Any] = (), **method_options: Any) -> FitResult:
    """Train ``student`` with ``method`` against ``teacher`` (a module, a list of modules = an
    ensemble, or None for ``method="supervised"``) and return the trained student.

    ``grad_clip``: ``"auto"`` (default) clips the gradient norm at 5.0 for distillation methods and
    not for plain training (see :func:`_grad_clip`); a number or None sets it. Every epoch a
    watchdog checks that accuracy (``val_data``'s, else the epoch's last ~512 training examples')
    has left chance, and warns in one line with the fix if not (``train_config={"collapse":
    "stop"}`` stops instead).

    ``run_dir``: a run folder like the CLI's — ``config.yaml``, ``metrics.jsonl``, checkpoints while
    training, then ``model.safetensors`` and ``summary.json`` (accuracy on ``test_data``, else
    ``val_data``), so ``distillab report / export / profile`` and :func:`load` work on it. An
    interrupted call with the same ``run_dir`` resumes; a finished one is loaded, not retrained.
    None = a temporary folder, removed afterwards. Models from :func:`distillab.create_model` (or
    ``model_name``/``model_kwargs`` naming a ``@register_model`` builder that rebuilds ``student``)
    are rebuilt by name; other modules are loaded into an instance you pass to :func:`load`.

    ``device``: "cpu", "cuda", "cuda:1", … (default: CUDA when present). ``progress``: a live bar
    (default: on a terminal). ``callbacks``: :class:`~distillab.engine.callbacks.Callback` objects
    (named hooks: on_fit_start/end, on_epoch_start/end with the record, state_dict for resume; an
    object with only ``on_epoch_start(epoch)`` is still accepted).
    ``train_config`` replaces the optimiser/schedule keyword arguments with a full
    :class:`~distillab.config.TrainConfig`.
    """
    from distillab.compat import check_torch_pair

    check_torch_pair()
    dev = choose_device(str(device) if device is not None else None)
    cfg = _method_config(method, method_options)
    if isinstance(train_config, dict):
        try:
            train_config = TrainConfig.model_validate(train_config)
        except ValidationError as e:
            raise UserError(format_validation_error(e, "train_config")) from None
    tcfg = train_config or TrainConfig(
        epochs=epochs, precision=precision,  # type: ignore[arg-type]
        optim=OptimConfig(name=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,  # type: ignore[arg-type]
                          schedule=schedule, warmup_epochs=warmup_epochs,  # type: ignore[arg-type]
                          grad_clip=_grad_clip(grad_clip, teacher is not None)))
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
    spec = _model_spec(student, model_name, model_kwargs, tuple(probe.x.shape[1:]),
                       class_names if class_names is not None else getattr(train_data, "classes", None))
    bar = _progress(progress)
    with tempfile.TemporaryDirectory(prefix="distillab-") as tmp:
        folder = Path(run_dir) if run_dir is not None else Path(tmp)
        _claim_api_run(folder, cfg, tcfg, seed, objective, spec)
        from distillab.engine.run_folder import MODEL_FILE, RunLock, is_finished, read_summary

        lock = RunLock(folder)
        try:
            if is_finished(folder) and (folder / MODEL_FILE).is_file():  # finished: read back
                _load_weights(student, folder / MODEL_FILE)
                summary = read_summary(folder)
                history = _history(folder)
                warning = summary.get("warning")
            else:
                trainer = Trainer(objective, train, tcfg, folder, seed=seed, val=val, progress=bar,  # type: ignore[arg-type]
                                  callbacks=callbacks)
                trainer.label = str(run_dir) if run_dir is not None else ""
                if bar is not None:
                    with bar:
                        bar.begin_run(f"{method} → {folder.name if run_dir is not None else 'model'}")
                        history = trainer.fit()
                        bar.end_run()
                else:
                    history = trainer.fit()
                warning = trainer.warning
                if run_dir is not None:
                    which = (
                        "test_data" if test_data is not None else "val_data" if val_data is not None else "train_data"
                    )
                    _finish_run(folder, objective, spec, cfg, tcfg, seed, history, warning, dev,
                                {"test_data": test_data, "val_data": val_data, "train_data": train_data}[which],
                                which, batch_size)
        finally:
            lock.release()
    metrics = _evaluate(objective.eval_model(), val) if val is not None else None
    return FitResult(student, objective, history, metrics, warning)


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


def _progress(progress: bool | None) -> Any:
    """A live bar on a terminal (``progress=None``) or when asked; nothing otherwise."""
    from rich.console import Console

    from distillab.engine.progress import RichProgress

    console = Console(stderr=True)
    if progress is False or (progress is None and not console.is_terminal):
        return None
    return RichProgress(1, console)


def _model_spec(student: nn.Module, name: str | None, kwargs: dict[str, Any] | None, in_shape: tuple[int, ...],
                classes: Any) -> dict[str, Any]:
    """What ``model.safetensors`` records to rebuild ``student``: a zoo / registered name when known."""
    known = getattr(student, "_distillab_spec", None)
    spec: dict[str, Any] = {"in_shape": list(in_shape)}
    if name is not None:
        spec.update(name=name, kwargs=dict(kwargs or {}))
    elif known is not None:
        spec.update(name=known["name"], kwargs=known["kwargs"])
    else:
        spec["module"] = f"{type(student).__module__}.{type(student).__qualname__}"
    if len(in_shape) == 3:
        spec.update(in_chans=in_shape[0], img_size=in_shape[-1])
    if classes is not None and all(isinstance(c, str) for c in classes):
        spec["classes"] = list(classes)
    return spec


def _load_weights(model: nn.Module, path: Path) -> None:
    from distillab.engine.checkpoint import _load_tensors

    try:
        model.load_state_dict(_load_tensors(path))
    except RuntimeError as e:
        raise UserError(f"{path} does not fit this model ({str(e).splitlines()[0][:160]})") from None


def _history(folder: Path) -> list[dict[str, Any]]:
    from distillab.engine.run_folder import read_metrics

    return read_metrics(folder)


def _finish_run(folder: Path, objective: Objective, spec: dict[str, Any], cfg: Any, tcfg: TrainConfig, seed: int,
                history: list[dict[str, Any]], warning: str | None, dev: torch.device, eval_data: Any,
                evaluated_on: str, batch_size: int) -> None:
    """The files a CLI run ends with: ``model.safetensors`` (weights + spec), ``summary.json``; the
    resume checkpoint is then dropped (the CLI's default)."""
    import json

    from distillab.engine.checkpoint import atomic_write_text, drop_train_state, save_model
    from distillab.engine.run_folder import MODEL_FILE, SUMMARY_FILE
    from distillab.models import count_params
    from distillab.profile import count_macs

    student = objective.eval_model()
    ev = _evaluate(student, _loader(eval_data, batch_size, seed, shuffle=False, num_workers=0))
    spec["num_classes"] = ev["classes"]
    save_model(folder / MODEL_FILE, student, spec)
    try:
        macs = count_macs(student, tuple(spec["in_shape"]))
    except Exception:  # noqa: BLE001 - a user's module the flop counter cannot trace: report 0
        macs = 0
    summary: dict[str, Any] = {
        "seed": seed, "model": spec.get("name") or spec.get("module", "model"), "method": cfg.name,
        "test_acc": ev["acc"], "test_top5": ev["top5"], "test_errors": ev["errors"], "test_n": ev["n"],
        "evaluated_on": evaluated_on,  # test_acc is measured on test_data, else val_data, else train_data
        "val_acc": history[-1].get("val_acc") if history else None,
        "params": count_params(student), "macs": macs, "epochs": tcfg.epochs,
        "train_seconds": sum(h["seconds"] for h in history), "device": dev.type, "api": True,
    }
    if warning:
        summary["warning"] = warning
    atomic_write_text(folder / SUMMARY_FILE, json.dumps(summary, indent=1))
    drop_train_state(folder)


def _claim_api_run(folder: Path, cfg: Any, tcfg: TrainConfig, seed: int, objective: Objective,
                   spec: dict[str, Any]) -> None:
    """Record what a ``run_dir`` trains (method and training config, seed, parameter shapes) and
    refuse to resume a folder that holds something else — e.g. the previous call of a sweep.
    ``config.yaml`` holds the same record, so ``distillab report`` groups API runs as CLI ones."""
    from distillab.engine.run_folder import claim_api_run

    what = {"method": cfg.model_dump(mode="json", exclude={"teacher"}), "train": tcfg.model_dump(mode="json"),
            "seed": seed, "shapes": {k: list(v.shape) for k, v in objective.state_dict().items()
                                     if not k.startswith("teacher.")}}
    config = {"model": {k: spec[k] for k in ("name", "kwargs", "module") if k in spec},
              "method": what["method"], "train": what["train"], "seed": seed}
    claim_api_run(folder, what, config)


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

    from distillab.studies import run_config

    console = Console(quiet=quiet)
    return run_config(dict(config), Path(out), console, "config", resume)


def load(run_dir: str | Path, model: nn.Module | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run folder (CLI or API run) in eval mode. Models built by name (the zoo,
    ``@register_model`` builders, ``model_name=``) are rebuilt; for your own module class pass a
    fresh instance as ``model`` and its weights are loaded into it."""
    from distillab.engine.checkpoint import load_model, read_model_spec

    path, spec = read_model_spec(run_dir)
    if model is None:
        if "name" not in spec:
            raise UserError(f"{path} holds the weights of your own {spec.get('module', 'module')}: rebuild it and "
                            f"pass it, distillab.load({str(run_dir)!r}, model=YourNet()) — or train it with "
                            f"model_name= (a @register_model builder) so it can be rebuilt by name")
        return load_model(path, device=device).eval()
    _load_weights(model, path)
    return model.to(device).eval()
