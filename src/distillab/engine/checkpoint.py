"""Checkpoints: safetensors for tensors, JSON for the rest, every write atomic.

A run directory holds
  ``model.safetensors``        the final student, with the model's recipe in the metadata
  ``ckpt-<epoch>.safetensors`` resumable training state (modules + optimiser tensors)
  ``state.json``               the commit point: which ckpt file is current, epoch, optimiser scalars
A crash between writes leaves the previous ``state.json`` pointing at a complete older file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from distillab.errors import UserError
from distillab.engine.run_folder import CHECKPOINT_GLOB, MODEL_FILE, STATE_FILE, checkpoint_name  # noqa: F401 - re-exported



def _tmp(path: Path) -> Path:
    """A temporary name unique to this process, beside ``path`` (two processes never share one)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def _write_failed(path: Path, tmp: Path, err: OSError) -> UserError:
    tmp.unlink(missing_ok=True)  # no orphan: the previous committed file is untouched
    reason = "the disk is full" if err.errno == 28 else (err.strerror or str(err))
    return UserError(f"cannot write {path} ({reason}); the last committed state is intact — free space or "
                     f"fix permissions, then rerun with --resume")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename, so readers never see half a file."""
    tmp = _tmp(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise _write_failed(path, tmp, e) from None


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tmp = _tmp(path)
    # clone: safetensors refuses tensors that share storage (tied weights, views).
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except OSError as e:
        raise _write_failed(path, tmp, e) from None
    except SafetensorError as e:  # safetensors reports I/O failures (disk full) as its own error
        raise _write_failed(path, tmp, OSError(28 if "space" in str(e).lower() else 5, str(e))) from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} is unreadable ({str(e).splitlines()[0]})") from None


# ---------------------------------------------------------------- final models
def save_model(path: Path, model: nn.Module, spec: dict[str, Any]) -> None:
    """Save a model's weights with ``spec`` (name, kwargs, num_classes, in_chans, img_size, data)."""
    _save_tensors(path, model.state_dict(), {"distillab": json.dumps(spec)})


def read_model_spec(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Resolve a run dir or model file; return the file and the spec stored with it."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        seeds = (
            sorted(d.name for d in p.parent.glob("seed*") if (d / MODEL_FILE).is_file()) if p.parent.is_dir() else []
        )
        if seeds:  # a role folder (runs/x/teacher) instead of one of its runs (runs/x/teacher/seed0)
            raise UserError(f"model checkpoint not found: {p}; {p.parent} is a role folder holding the runs "
                            f"{', '.join(seeds[:4])}: name one, e.g. {p.parent / seeds[0]}")
        raise UserError(f"model checkpoint not found: {p} (train that run first)")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        spec = json.loads(meta["distillab"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RecursionError) as e:
        raise UserError(f"model checkpoint {p} is not a distillab model file ({type(e).__name__})") from None
    problem = _spec_problem(spec)
    if problem:
        raise UserError(f"model checkpoint {p} has a malformed model spec ({problem})")
    return p, spec


def _finite_list(v: Any, n: int) -> bool:
    import math

    return isinstance(v, list) and len(v) == n and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)


def _spec_problem(spec: Any) -> str | None:
    """What is wrong with the model spec stored in a safetensors header, or None."""
    if not isinstance(spec, dict):
        return f"a {type(spec).__name__}, not a mapping"
    def is_int(k: str, lo: int, hi: int) -> bool:
        v = spec.get(k)
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    if not isinstance(spec.get("name"), str) and not isinstance(spec.get("module"), str):
        return "neither a model name nor a module"
    if ("name" in spec or "kwargs" in spec) and not isinstance(spec.get("kwargs"), dict):
        return "kwargs is not a mapping"
    shape = spec.get("in_shape")  # a model of any input shape (no in_chans / img_size then)
    if shape is not None and not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65536 for v in shape)):
        return f"in_shape {shape!r} is not a list of 1..4 positive sizes"
    for key, hi in (("num_classes", 1_000_000), ("in_chans", 64), ("img_size", 4096)):
        if (key == "num_classes" or key in spec or shape is None) and not is_int(key, 1, hi):
            return f"{key} {spec.get(key)!r} is not an integer in 1..{hi}"
    if "data" in spec and not isinstance(spec["data"], str):
        return "data is not a source name"
    if "classes" in spec and not (isinstance(spec["classes"], list) and len(spec["classes"]) == spec["num_classes"]):
        return f"classes is not a list of {spec['num_classes']} class names"
    norm = spec.get("normalize")
    if norm is not None:
        n = spec.get("in_chans") or (len(norm.get("mean") or []) if isinstance(norm, dict) else 0) or 1
        if not (isinstance(norm, dict) and _finite_list(norm.get("mean"), n) and _finite_list(norm.get("std"), n)):
            return f"normalize is not a mean and std of {n} finite numbers"
        if any(x <= 0 for x in norm["std"]):
            return "normalize.std holds a value <= 0 (inputs would be divided by zero)"
    return None


def load_model(path: str | Path, *, num_classes: int | None = None, in_shape: tuple[int, ...] | None = None,
               data: tuple[str, list[str]] | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a saved model from its spec and load its weights; check it fits the data.

    ``data`` = (source name, class names): a teacher must have been trained on the same task.
    """
    from distillab.models import create_model

    p, spec = read_model_spec(path)
    if "name" not in spec:  # an API run of a user's own module class: no builder to call
        raise UserError(f"{p} holds the weights of your own {spec.get('module', 'module')}, which distillab cannot "
                        f"rebuild; in Python: distillab.load(RUN_DIR, model=YourNet()); to rebuild it by name, "
                        f"register a builder (@distillab.register_model) and pass model_name= to distill/train "
                        f"(then --import YOUR_MODULE)")
    if not isinstance(spec.get("name"), str):
        raise UserError(f"model checkpoint {p} names no zoo model to rebuild (a module saved from Python?)")
    if num_classes is not None and spec["num_classes"] != num_classes:
        raise UserError(f"checkpoint {p} predicts {spec['num_classes']} classes but the data has {num_classes}")
    if data is not None and "classes" in spec and (spec.get("data"), spec["classes"]) != (data[0], list(data[1])):
        raise UserError(f"checkpoint {p} was trained on {spec.get('data')} classes {spec['classes'][:3]}…, "
                        f"not on this run's data ({data[0]} classes {list(data[1])[:3]}…)")
    if in_shape is not None and [spec["in_chans"], spec["img_size"]] != [in_shape[0], in_shape[-1]]:
        raise UserError(f"checkpoint {p} expects {spec['in_chans']}x{spec['img_size']}px inputs, "
                        f"the data has {in_shape[0]}x{in_shape[-1]}px")
    # The saved weights replace everything: do not reload a pretrained file named in the kwargs.
    kwargs = {k: v for k, v in spec["kwargs"].items() if k != "checkpoint"}
    tensors = _load_tensors(p)
    bad = next((k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:  # else the first step reports a NaN loss and blames the learning rate
        raise UserError(f"checkpoint {p} holds NaN or infinite weights ({bad}); retrain the model it came from")
    try:
        model = create_model(spec["name"], spec["num_classes"], spec.get("in_chans", 1), spec.get("img_size", 28),
                             **kwargs)
    except UserError as e:
        raise UserError(f"model checkpoint {p}: {e}") from None
    except (MemoryError, RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"model checkpoint {p}: its model spec {spec['name']!r} cannot be built "
                        f"({type(e).__name__})") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"checkpoint {p} does not match model {spec['name']} ({str(e).splitlines()[0]})") from None
    return model.to(device)


# ---------------------------------------------------------------- resumable training state
def save_train_state(run_dir: Path, epoch: int, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                     extra: dict[str, Any]) -> None:
    """Save everything needed to continue after ``epoch`` completed epochs."""
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        tensors.update({f"{name}.{k}": v for k, v in mod.state_dict().items()})
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    fname = checkpoint_name(epoch)
    _save_tensors(run_dir / fname, tensors)
    state = {"epoch": epoch, "file": fname, "param_groups": opt["param_groups"], "optim_scalars": scalars, **extra}
    old = read_train_state(run_dir)
    atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1))
    if old and old["file"] != fname:  # only after the new state is committed
        (run_dir / old["file"]).unlink(missing_ok=True)


def drop_train_state(run_dir: Path) -> None:
    """Delete the resumable state of a finished run: the commit point first, then the files."""
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    for f in run_dir.glob(CHECKPOINT_GLOB):
        f.unlink(missing_ok=True)


def read_train_state(run_dir: Path) -> dict[str, Any] | None:
    p = run_dir / STATE_FILE
    if not p.is_file():
        return None
    try:
        state = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"training state {p} is corrupt; delete it to restart the run") from None
    if not isinstance(state, dict) or not {"epoch", "file", "param_groups", "optim_scalars"} <= set(state):
        raise UserError(f"training state {p} is incomplete; delete it (and the ckpt-* files) to restart the run")
    problem = _state_problem(state)
    if problem:
        raise UserError(f"training state {p} is corrupt ({problem}); rerun with --restart to discard the run")
    return state


_CKPT_NAME = re.compile(r"ckpt-(\d{4,9})\.safetensors")


def _state_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a parsed state.json, or None. Its ``file`` is only ever a checkpoint name
    this module writes (never a path: resume deletes the previous one), for the same epoch."""
    epoch, file = state["epoch"], state["file"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return f"epoch {epoch!r} is not a positive integer"
    m = _CKPT_NAME.fullmatch(file) if isinstance(file, str) else None
    if m is None or int(m.group(1)) != epoch:
        return f"file {file!r} is not ckpt-{epoch:04d}.safetensors"
    groups, scalars = state["param_groups"], state["optim_scalars"]
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        return "param_groups is not a list of optimiser groups"
    if not isinstance(scalars, dict) or not all(
            isinstance(k, str) and k.isdigit() and isinstance(v, dict) for k, v in scalars.items()):
        return "optim_scalars is not a mapping of parameter indices"
    return None


def load_train_state(run_dir: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore modules and optimiser from the committed checkpoint; return the JSON state."""
    state = read_train_state(run_dir)
    assert state is not None
    tensors = _load_tensors(run_dir / state["file"])
    for name, mod in modules.items():
        prefix = name + "."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            mod.load_state_dict(sd)
        except RuntimeError as e:
            raise UserError(
                f"checkpoint {run_dir / state['file']} does not match {name} ({str(e).splitlines()[0]})"
            ) from None
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            if not idx.isdigit():
                raise UserError(f"checkpoint {run_dir / state['file']} holds a malformed optimiser key {k!r}")
            opt_state.setdefault(int(idx), {})[key] = v
    for idx, sc in state["optim_scalars"].items():
        opt_state.setdefault(int(idx), {}).update(sc)
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserError(
            f"training state {run_dir / STATE_FILE} does not match this run's optimiser "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); rerun with --restart"
        ) from None
    return state
