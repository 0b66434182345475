"""One training run: spec → validated inputs → run directory with config, metrics, model, summary.

Everything that can fail on bad input (data, model name, teacher checkpoints) is checked
*before* the run directory is touched, and an existing directory holding a different config is
never overwritten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from distillab.config import DataConfig, ModelConfig, Strict, TrainConfig, dump_yaml
from distillab.data import DataBundle, prepare_data
from distillab import distributed
from distillab.engine.checkpoint import atomic_write_text, drop_train_state, load_model, save_model
from distillab.engine.owned import claim_study_folder, has_marker, write_marker
from distillab.engine.run_folder import (  # noqa: F401 - re-exported: the names callers used from here
    CONFIG_FILE, INPUTS_FILE, MODEL_FILE, SEED_KEYS, SUMMARY_FILE, RunLock, check_run_dir, discard, file_digest,
    input_digests, read_metrics, read_summary, without_locations)
from distillab.engine.trainer import Progress, Trainer, choose_device, evaluate
from distillab.errors import UserError
from distillab.methods import Context, MethodConfig, Teacher, build_objective
from distillab.methods.supervised import SupervisedConfig
from distillab.models import count_params, create_model
from distillab.profile import count_macs
from distillab.transfer import InitConfig, apply_init, layerwise_param_groups


def derive_seed(seed: int, key: str) -> int:
    """The seed of the run ``key`` (its name in a study) for study seed ``seed``: a stable hash, so
    every run of a study starts from its own initialisation and data order (a Born-Again generation
    is a new random student, AnB's re-initialised layers are not baseB's initial weights), and the
    same command always gives the same weights. Runs that are compared *paired* on purpose (a
    student alone and the same student distilled) share a key."""
    import hashlib

    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


class RunSpec(Strict):
    """Everything that defines one trained model (the seed is given separately)."""

    data: DataConfig = DataConfig()
    model: ModelConfig
    method: MethodConfig = SupervisedConfig()
    train: TrainConfig = TrainConfig()
    init: InitConfig | None = None


def _param_groups(spec: RunSpec, objective) -> list[dict] | None:
    """Optimiser groups for transfer runs: every student parameter (frozen ones get no gradient,
    so the optimiser leaves them alone until they are unfrozen), optionally with per-block lrs."""
    if spec.init is None:
        return None
    student = objective.student
    lr = spec.train.optim.lr
    if spec.init.layer_decay is not None:
        groups = layerwise_param_groups(student, lr, spec.init.layer_decay)
    else:
        groups = [{"params": list(student.parameters()), "lr": lr}]
    in_student = {id(p) for p in student.parameters()}
    extra = [p for p in objective.trainable_parameters() if id(p) not in in_student]
    return groups + ([{"params": extra, "lr": lr}] if extra else [])


def execute_run(spec: RunSpec, seed: int, run_dir: Path, *, progress: Progress | None = None,
                device: torch.device | None = None, data: DataBundle | None = None,
                resume: bool = True, keep_checkpoints: bool = False, restart: bool = False,
                run_seed: int | None = None, study_dir: Path | None = None) -> dict[str, Any]:
    """Train one run and return its summary. ``seed`` picks the data (validation split, subsets,
    few-shot examples: the same for every run of a study seed); ``run_seed`` (default ``seed``)
    the initialisation, data order, augmentation and dropout of this run. A finished run is read back,
    never retrained; an
    unfinished one continues from its last checkpoint when ``resume``, else it is an error.
    Once the summary is written the resume checkpoint is deleted unless ``keep_checkpoints``
    (the final student is ``model.safetensors``; the checkpoint also holds optimiser state and
    connectors, and doubled the size of every finished run). ``restart`` discards an unfinished
    run (e.g. one whose loss became NaN) and trains it anew. ``study_dir``: the study folder holding
    the run, marked as distillab's when the run first writes into it."""
    run_seed = seed if run_seed is None else run_seed
    text = dump_yaml(spec) + f"seed: {seed}\nrun_seed: {run_seed}\n"
    state, _ = _decide(run_dir, text, spec, resume, restart)
    if state == "done":
        return read_summary(run_dir)
    device = device or choose_device()
    data = data or prepare_data(
        spec.data, seed, device, order_seed=run_seed, normalization=inherited_normalization(spec)
    )
    c, _, w = data.shape

    def load_teacher(paths: list[str]) -> Teacher:
        members = [load_model(p, num_classes=data.num_classes, in_shape=data.shape,
                              data=(spec.data.source, data.classes), device=device) for p in paths]
        return Teacher(members)

    torch.manual_seed(run_seed)
    student = create_model(spec.model.name, data.num_classes, c, w, init=spec.model.init,
                           **spec.model.kwargs).to(device)
    callbacks = []
    if spec.init is not None:
        # No image-size check: conv blocks transfer across resolutions (BiT fine-tunes at a higher
        # one); copy_blocks rejects weights whose shapes do not fit.
        callbacks = apply_init(student, spec.init, lambda p: load_model(p, device=device), train=data.train)
    cache_record = None
    cache_cfg = getattr(spec.method, "cache", None)
    if cache_cfg is not None:  # the objective's teacher answers from stored outputs (engine/soft_labels.py)
        if not hasattr(data.train, "view_batch"):
            raise UserError("method.cache: the soft-label cache needs an in-memory source (it rebuilds stored "
                            "views by index); streaming sources distil online")
        from distillab.engine.soft_labels import open_cache

        paths = list(spec.method.teacher)
        cached, cache_record = open_cache(cache_cfg, paths, [file_digest(p) for p in paths], data.train,
                                          load_teacher, device)
        load_teacher = lambda _paths: cached  # noqa: E731
    ctx = Context(load_teacher, data.shape, num_train=data.train.num_examples, epochs=spec.train.epochs)
    objective = build_objective(spec.method, student, ctx).to(device)
    param_groups = _param_groups(spec, objective)

    # Inputs are valid: only now touch the disk. Rank 0 claims the folder and re-checks it under the
    # lock: another process may have finished or started this run meanwhile (a run finished in
    # between is read back, never discarded by --restart).
    state, lock = _decide(run_dir, text, spec, resume, restart, claim=True, study_dir=study_dir)
    try:
        if state == "done":
            return read_summary(run_dir)
        return _train(
            spec,
            seed,
            run_seed,
            run_dir,
            objective,
            data,
            device,
            student,
            param_groups,
            callbacks,
            progress,
            keep_checkpoints,
            cache_record,
        )
    finally:
        if lock is not None:
            lock.release()


def inherited_normalization(spec: RunSpec) -> dict[str, list[float]] | None:
    """The input normalisation a run must use because a model it loads was trained with it: its
    transfer source's and its teachers' (which must all agree). None: the source's own statistics.
    Models saved before normalisation was recorded constrain nothing."""
    from distillab.engine.checkpoint import read_model_spec

    loads = list(getattr(spec.method, "teacher", None) or [])
    if spec.init is not None and spec.init.source:
        loads.insert(0, spec.init.source)
    known = [(p, n) for p in loads if (n := read_model_spec(p)[1].get("normalize")) is not None]
    if any(n != known[0][1] for _, n in known):
        raise UserError("the models this run loads were trained with different input normalisations ("
                        + "; ".join(f"{p}: mean {n['mean']}" for p, n in known)
                        + "); use a transfer source and teachers trained on one source")
    return known[0][1] if known else None


def unfinished_run_error(where: str) -> UserError:
    """The refusal when a run folder holds an unfinished run and neither --resume nor --restart was given."""
    return UserError(f"run directory {where} holds an unfinished run: pass --resume to continue it, "
                     f"--restart to discard it, or choose another --out")


def _decide(run_dir: Path, text: str, spec: RunSpec, resume: bool, restart: bool,
            claim: bool = False, study_dir: Path | None = None) -> tuple[str, "RunLock | None"]:
    """The run folder's state ('new', 'resume', 'restart', 'done'), decided by rank 0 and broadcast:
    under torchrun another rank looking at the folder itself could see rank 0's fresh config.yaml
    and take a new run for an unfinished one. With ``claim``, rank 0 also locks the folder and
    writes a new run's first files. Errors reach every rank, so all stop together."""
    error, state, lock = None, None, None
    if distributed.current().is_main:
        try:
            if claim:
                if study_dir is not None:
                    claim_study_folder(study_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                lock = RunLock(run_dir)
            state = check_run_dir(run_dir, text, spec, restart)
            if state in ("resume", "restart") and not claim and (pid := RunLock.holder(run_dir)) is not None:
                raise UserError(f"run {run_dir} is being trained by another process (pid {pid}); wait for it to "
                                f"finish (its results are then read back), or stop it first")
            if state == "resume" and not resume:
                raise unfinished_run_error(str(run_dir))
            if claim and state in ("new", "restart"):
                _start_files(run_dir, text, state, spec)
        except UserError as e:
            error = str(e)
    error, state = distributed.broadcast((error, state))
    if error:
        if lock is not None:
            lock.release()
        raise UserError(error)
    return state, lock


def _start_files(run_dir: Path, text: str, state: str, spec: RunSpec) -> None:
    """A new (or restarted) run's config and input digests; a resumed run's config is rewritten
    too (the same run, perhaps spelled with other paths)."""
    if state == "restart":
        discard(run_dir)
    if not has_marker(run_dir, "run"):
        write_marker(run_dir, "run")
    atomic_write_text(run_dir / CONFIG_FILE, text)
    atomic_write_text(run_dir / INPUTS_FILE, json.dumps(input_digests(spec)))


def _train(
    spec: RunSpec,
    seed: int,
    run_seed: int,
    run_dir: Path,
    objective: Any,
    data: DataBundle,
    device: torch.device,
    student: torch.nn.Module,
    param_groups: Any,
    callbacks: list,
    progress: Progress | None,
    keep_checkpoints: bool,
    cache_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, save the student, evaluate, write the summary (run folder locked by rank 0)."""
    c, _, w = data.shape
    dist = distributed.current()
    if dist.is_main and not has_marker(run_dir, "run"):  # a folder from before markers existed: adopted
        write_marker(run_dir, "run")
    if dist.is_main and not (run_dir / INPUTS_FILE).is_file():  # a folder from before digests existed
        atomic_write_text(run_dir / INPUTS_FILE, json.dumps(input_digests(spec)))
    t0 = time.perf_counter()
    trainer = Trainer(objective, data.train, spec.train, run_dir, seed=run_seed, val=data.val, progress=progress,
                      param_groups=param_groups, callbacks=callbacks)
    history = trainer.fit()
    wall = time.perf_counter() - t0
    model_spec = {"name": spec.model.name, "kwargs": spec.model.kwargs, "num_classes": data.num_classes,
                  "in_chans": c, "img_size": w, "data": spec.data.source, "classes": data.classes,
                  "normalize": data.normalization}
    if dist.is_main:
        save_model(run_dir / MODEL_FILE, student, model_spec)
    test = evaluate(objective.eval_model(), data.test)
    summary = {
        "seed": seed, "run_seed": run_seed, "model": spec.model.name, "method": spec.method.name,
        "test_acc": test["acc"], "test_top5": test["top5"], "test_errors": test["errors"], "test_n": test["n"],
        "val_acc": history[-1].get("val_acc") if history else None,
        "train_acc": history[-1].get("train_acc") if history else None,
        "val_n": getattr(data.val, "num_examples", None) if data.val is not None else None,
        "params": count_params(student), "macs": count_macs(student, data.shape),
        "epochs": spec.train.epochs, "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds_this_session": wall, "device": device.type,
    }
    if cache_record is not None:
        summary["soft_label_cache"] = cache_record
    if trainer.warning:  # the collapse watchdog fired and the run ended at chance: a failed training
        summary["warning"] = trainer.warning
    if dist.is_main:
        atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=1))  # the run is now done
        if not keep_checkpoints:
            drop_train_state(run_dir)
    distributed.barrier()  # the next run (a student of this teacher) starts once its files exist
    return summary
