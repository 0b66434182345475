"""Running a study from a config mapping: the library code behind ``distillab run`` / ``demo`` and
:func:`distillab.run_study` (the command line only parses and prints).

``run_config`` validates the mapping against its recipe, points data sections at ``--data-dir``,
checks every source and model before the first run (:func:`preflight`), then trains the runs here
or on Ray and writes the tables with the provenance (``study.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from distillab.config import DataConfig, ModelConfig, dump_yaml, find_all, validate
from distillab.errors import UserError


def run_config(data: dict, out: Path, console: Console, source: str, resume: bool = False,
               data_dir: str | None = None, keep_checkpoints: bool = False, quiet: bool = False,
               command: str | None = None, restart: bool = False, executor: dict | None = None) -> str:
    """Validate a config mapping against its recipe and run it; return the result Markdown.

    ``executor``: None trains the runs here, in order; ``{"kind": "ray", "address": …, "cpus": …,
    "gpus": …, "imports": […]}`` trains them as Ray tasks first (recipes/plan.py), then the recipe
    reads every finished run back and writes its tables here."""
    from distillab.distributed import init_from_env
    from distillab.recipes import RECIPES
    from distillab.recipes.plan import plan_study
    from distillab.recipes.study import Study, check_study_folder

    recipe = RECIPES.get_entry(data.get("recipe"), where=f"{source}: ")
    cfg = validate(recipe.config, data, source)
    if not init_from_env().is_main:  # under torchrun: rank 0 speaks and writes for the job
        quiet = True
        console = Console(quiet=True)
    if data_dir:
        set_data_dir(cfg, data_dir)
    preflight(cfg)
    check_study_folder(out)  # before any run: --out must be new, empty or distillab's own
    if not quiet:
        console.print(f"[bold]{recipe.name}[/] → {out}")
    if executor and executor.get("kind") == "ray":
        from distillab.recipes.plan import run_study_on_ray

        out = out.resolve()  # Ray workers may run in another directory (or on another machine)
        run_study_on_ray(cfg, recipe, out, address=executor.get("address"), cpus=executor.get("cpus", 1),
                         gpus=executor.get("gpus", 0), imports=executor.get("imports"), resume=resume,
                         keep_checkpoints=keep_checkpoints, restart=restart, study_dir=out,
                         log=(lambda m: None) if quiet else (lambda m: console.print(m, highlight=False)))
    plan = plan_study(cfg, recipe, out, provisional=True)  # every run, those a tuning grid picks included
    with Study(out, len(plan), console, resume=resume, keep_checkpoints=keep_checkpoints,
               quiet=quiet, provenance=provenance(cfg, command), restart=restart) as study:
        if not quiet and console.is_terminal:  # the live bar's ETA: estimated work of every planned run
            study.plan_weights(plan)
        md = recipe.run(cfg, out, study)
    if console.is_terminal:  # rendered (bold verdicts, aligned tables); files and pipes get the Markdown text
        from rich.markdown import Markdown

        console.print(Markdown(md))
    else:
        console.print(md, soft_wrap=True, markup=False, highlight=False)
    if study.reused and not quiet:
        console.print(f"reused {study.reused} finished run{'s' if study.reused > 1 else ''} from {out} (read back, "
                      f"not retrained; delete a run folder to retrain it)", highlight=False)
    return md


def demo_intro(data: dict[str, Any]) -> str:
    """What ``distillab demo`` tells a new user before it starts (the preset's T, alpha and seeds)."""
    d = data.get("distill", {})
    T, alpha = d.get("temperature", "?"), d.get("alpha", "?")
    return ("Hinton et al. 2015 at CPU scale, on Fashion-MNIST. A big convolutional teacher (6 conv layers, 322K "
            "parameters, trained once on padded crops and flips) comes first; then a small MLP student (2x800 "
            "units) is trained twice — alone on the labels, and on the teacher's soft targets.\n"
            f"Soft targets are the teacher's class probabilities softened at temperature T={T} (they show which "
            f"wrong classes look alike); alpha={alpha} weights them against the labels.\n"
            f"{len(data.get('seeds') or [0])} seed(s), about 8 minutes for 3 on 2 CPU cores; the table compares the "
            f"three models.")


def ray_executor(address: str | None, cpus: float, gpus: float, imports: list[str] | None) -> dict[str, Any]:
    """``--executor ray``'s options for :func:`run_config`, checked (each run needs > 0 CPUs)."""
    import math

    if not (math.isfinite(cpus) and cpus > 0) or not (math.isfinite(gpus) and gpus >= 0):
        raise UserError(f"--ray-cpus must be > 0 and --ray-gpus >= 0 (got {cpus:g} and {gpus:g})")
    return {"kind": "ray", "address": address, "cpus": cpus, "gpus": gpus, "imports": imports or []}


def import_modules(names: list[str] | None) -> None:
    """Import user modules (``--import mypkg.models``) so their ``@register_model`` /
    ``@register_method`` / ``@register_source`` / ``@register_recipe`` decorators run before a
    config is read."""
    import importlib

    for name in names or []:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise UserError(f"--import {name!r}: not an absolute module name such as mypkg.models")
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"--import {name}: {e}") from None
        except SyntaxError as e:
            raise UserError(f"--import {name}: syntax error in {e.filename} line {e.lineno}") from None
        except Exception as e:  # noqa: BLE001 - the module's own code raised while importing
            where = ""
            tb = e.__traceback__
            while tb is not None:  # the innermost frame in the user's code names the place
                where = f" ({tb.tb_frame.f_code.co_filename} line {tb.tb_lineno})"
                tb = tb.tb_next
            raise UserError(f"--import {name}: the module raised {type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}{where}") from None


def provenance(cfg: BaseModel, command: str | None) -> str:
    """``study.json``: the command line and the validated config (written beside the results table)."""
    command = command or "(from Python) distillab.run_study(...)"
    return json.dumps({"command": command, "config_yaml": dump_yaml(cfg)}, indent=1)


def set_device(device: str | None) -> None:
    """``--device``: checked now (a clear error when CUDA is not there), then used by every run."""
    if device is None:
        return
    import os

    from distillab.engine.trainer import choose_device

    choose_device(device)
    os.environ["DISTILLAB_DEVICE"] = device


def default_out(config: Path) -> Path:
    """runs/<folder>-<name> for configs/<folder>/<name>.yaml (configs of different studies share
    names — bit/fashion-mnist.yaml, hinton/fashion-mnist.yaml — and must not share a folder);
    runs/<name> for any other config file."""
    where = config.resolve().parent
    return Path("runs") / (f"{where.name}-{config.stem}" if where.parent.name == "configs" else config.stem)


def set_data_dir(cfg: BaseModel, data_dir: str) -> int:
    """Point every :class:`DataConfig` inside a *validated* config at ``data_dir``; return how many.

    Walking the schema (not the raw YAML mapping) means only real data sections change — an
    ``init:`` section's ``source`` (a run folder) is left alone — and it cannot recurse forever on
    self-referencing or exponentially aliased YAML, since validation already produced a tree."""
    sections = find_all(cfg, DataConfig)
    for d in sections:
        d.data_dir = data_dir
    return len(sections)


def preflight(cfg: BaseModel) -> None:
    """Check what a study needs before its first run trains: every data source is present and every
    model builds (on the meta device: no memory). A typo in a student's model name then fails in
    a second, not after the teacher has trained for an hour."""
    import torch

    from distillab.data.prepare import _cached_source
    from distillab.data.sources import resolve_source
    from distillab.models import create_model

    shape: tuple[int, ...] = (1, 28, 28)
    classes = 10
    for i, d in enumerate(find_all(cfg, DataConfig)):
        entry, arg = resolve_source(d.source)
        if entry.describe is not None:  # a streamed kind: read its metadata, never the data
            found: tuple[tuple[int, ...], int] = entry.describe(arg or "")
        else:
            ds = _cached_source(d.source, d.data_dir, d.image_size, d.channels)
            found = ds.shape, ds.num_classes
        if i == 0:
            shape, classes = found
    with torch.device("meta"):
        for m in find_all(cfg, ModelConfig):
            kwargs = {k: v for k, v in m.kwargs.items() if k != "checkpoint"}  # weights: checked per run
            create_model(m.name, classes, shape[0], shape[-1], **kwargs)


