"""The ``distillab`` command.

  distillab run CONFIG [key.sub=value ...] [--out DIR] [--data-dir DIR] [--resume]
  distillab demo [--out DIR] [--data-dir DIR] [--resume]
  distillab report RUNS_DIR [--csv]
  distillab profile MODEL|RUN|FILE.onnx [...] [--input-shape 1x28x28] [--runtime torch|onnxruntime]
  distillab export RUN [--onnx FILE] [--torchscript FILE]
  distillab list recipes|models|methods|sources

Bad input ends with a one-line ``error:`` message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from typing import TYPE_CHECKING

from pydantic import BaseModel
from rich.console import Console

from distillab.config import DataConfig, ModelConfig, apply_overrides, find_all, load_yaml, validate
from distillab.errors import UserError

if TYPE_CHECKING:
    from distillab.profile import Cost

DEMO_PRESET = "hinton-demo.yaml"


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--input-shape {text!r} must look like CxHxW, e.g. 1x28x28") from None
    if h != w or min(c, h) <= 0:
        raise UserError(f"--input-shape {text!r}: need square images with positive sizes")
    if c > 64 or h > 2048:
        raise UserError(f"--input-shape {text!r}: at most 64 channels and 2048 pixels a side")
    return c, h, w


def run_config(data: dict, out: Path, console: Console, source: str, resume: bool = False,
               data_dir: str | None = None, keep_checkpoints: bool = False, quiet: bool = False,
               command: str | None = None, restart: bool = False, executor: dict | None = None) -> str:
    """Validate a config mapping against its recipe and run it; return the result Markdown.

    ``executor``: None trains the runs here, in order; ``{"kind": "ray", "address": …, "cpus": …,
    "gpus": …, "imports": […]}`` trains them as Ray tasks first (engine/plan.py), then the recipe
    reads every finished run back and writes its tables here."""
    from distillab.recipes import RECIPES
    from distillab.recipes.study import Study

    name = data.get("recipe")
    if name not in RECIPES:
        raise UserError(f"{source}: recipe: {name!r} unknown (known: {', '.join(RECIPES)})")
    cls, module = RECIPES[name]
    cfg = validate(cls, data, source)
    from distillab.engine.distributed import init_from_env

    if not init_from_env().is_main:  # under torchrun: rank 0 speaks and writes for the job
        quiet = True
        console = Console(quiet=True)
    if data_dir:
        set_data_dir(cfg, data_dir)
    preflight(cfg)
    from distillab.recipes.study import check_study_folder

    check_study_folder(out)  # before any run: --out must be new, empty or distillab's own
    if not quiet:
        console.print(f"[bold]{name}[/] → {out}")
    if executor and executor.get("kind") == "ray":
        from distillab.engine.plan import run_study_on_ray

        out = out.resolve()  # Ray workers may run in another directory (or on another machine)
        run_study_on_ray(cfg, module, out, address=executor.get("address"), cpus=executor.get("cpus", 1),
                   gpus=executor.get("gpus", 0), imports=executor.get("imports"), resume=resume,
                   keep_checkpoints=keep_checkpoints, restart=restart, study_dir=out,
                   log=(lambda m: None) if quiet else (lambda m: console.print(m, highlight=False)))
    with Study(out, module.count_runs(cfg), console, resume=resume, keep_checkpoints=keep_checkpoints,
               quiet=quiet, provenance=_provenance(cfg, command), restart=restart) as study:
        if not quiet and console.is_terminal:  # the live bar's ETA: estimated work of every planned run
            from distillab.engine.plan import plan_study

            study.plan_weights(plan_study(cfg, module, out))
        md = module.run(cfg, out, study)
    if console.is_terminal:  # rendered (bold verdicts, aligned tables); files and pipes get the Markdown text
        from rich.markdown import Markdown

        console.print(Markdown(md))
    else:
        console.print(md, soft_wrap=True, markup=False, highlight=False)
    if study.reused and not quiet:
        console.print(f"reused {study.reused} finished run{'s' if study.reused > 1 else ''} from {out} (read back, "
                      f"not retrained; delete a run folder to retrain it)", highlight=False)
    return md


def _import_modules(names: list[str]) -> None:
    """Import user modules (``--import mypkg.models``) so their ``@register_model`` /
    ``@register_method`` decorators run before the config is read."""
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


def _provenance(cfg: BaseModel, command: str | None) -> str:
    """``study.json``: the command line and the validated config (written beside the results table)."""
    import json

    from distillab.config import dump_yaml

    command = command or "(from Python) distillab.run_study(...)"
    return json.dumps({"command": command, "config_yaml": dump_yaml(cfg)}, indent=1)


def cmd_run(args: argparse.Namespace, console: Console) -> None:
    _import_modules(args.imports)
    _set_device(args.device)
    data = apply_overrides(load_yaml(args.config), args.overrides)
    out = Path(args.out) if args.out else default_out(Path(args.config))
    executor = None
    import math

    if not (math.isfinite(args.ray_cpus) and args.ray_cpus > 0) or not (math.isfinite(args.ray_gpus) and args.ray_gpus >= 0):
        raise UserError(f"--ray-cpus must be > 0 and --ray-gpus >= 0 (got {args.ray_cpus:g} and {args.ray_gpus:g})")
    if args.executor == "ray":
        executor = {"kind": "ray", "address": args.address, "cpus": args.ray_cpus, "gpus": args.ray_gpus,
                    "imports": args.imports or []}
    elif args.address:
        raise UserError("--address names a Ray cluster: use it with --executor ray")
    run_config(data, out, console, str(args.config), args.resume, args.data_dir, args.keep_checkpoints, args.quiet,
               args.command_line, args.restart, executor)


def cmd_demo(args: argparse.Namespace, console: Console) -> None:
    _set_device(args.device)
    text = resources.files("distillab.presets").joinpath(DEMO_PRESET).read_text()
    import yaml

    data = apply_overrides(yaml.safe_load(text), args.overrides)
    d = data.get("distill", {})
    T, alpha = d.get("temperature", "?"), d.get("alpha", "?")
    if not args.quiet:
        console.print(
            "Hinton et al. 2015 at CPU scale, on Fashion-MNIST. A big teacher (2x1200 units, dropout, jittered "
            "images) is trained first; then a student with about half its parameters (2x800: 1.3M vs 2.4M) is "
            "trained twice — alone on the labels, and on the teacher's soft targets.\n"
            f"Soft targets are the teacher's class probabilities softened at temperature T={T} (they show which "
            f"wrong classes look alike); alpha={alpha} weights them against the labels.\n"
            f"{len(data.get('seeds') or [0])} seed(s), about 8 minutes for 3 on 2 CPU cores; the table compares the "
            f"three models.", highlight=False)
    run_config(data, Path(args.out), console, f"demo preset {DEMO_PRESET}", args.resume, args.data_dir,
               args.keep_checkpoints, args.quiet, args.command_line, args.restart)
    if not args.quiet:
        console.print("Read more: docs/studies/hinton.md (this study), docs/results.md (every verdict), docs/methods/kd.md (the loss and its "
                      "keys); `distillab list recipes` for the other studies.", highlight=False)


LIST_KINDS = ("recipes", "models", "methods", "sources")
SOURCE_HELP = {
    "fashion-mnist": "70k 28x28 grey clothing images, 10 classes (Debian: dataset-fashion-mnist)",
    "mnist": "70k 28x28 grey digits, 10 classes",
    "cifar10": "60k 32x32 colour images, 10 classes",
    "cifar100": "60k 32x32 colour images, 100 classes",
    "digits": "scikit-learn's bundled 1,797 8x8 digits (always available; used by the tests)",
    "imagefolder:PATH": "PATH/train/<class>/*.png|jpg and PATH/test/<class>/…, at their own size and channels "
                        "(data.image_size / data.channels convert them)",
    "webdataset:PATH": "WebDataset shards written by `distillab data pack`, streamed from disk by DataLoader workers",
}


def _summary(doc: str | None, limit: int = 110) -> str:
    """The first paragraph of a docstring, shortened, without a leading "Recipe ``name``:" tag."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = text.split(": ", 1)[1] if text.startswith("Recipe ``") and ": " in text else text
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def cmd_list(args: argparse.Namespace, console: Console) -> None:
    """One line per recipe, model family, method or data source."""
    _import_modules(args.imports)
    rows: list[tuple[str, str]] = []
    if args.kind == "recipes":
        from distillab.recipes import RECIPES

        rows = [(name, _summary(module.__doc__)) for name, (_, module) in RECIPES.items()]
    elif args.kind == "models":
        from distillab.models import MODELS

        rows = [(e.help.split(" — ")[0] if " — " in e.help else e.name, e.help.split(" — ")[-1])
                for e in MODELS.values()]
    elif args.kind == "methods":
        from distillab.methods import METHODS

        rows = [(e.name, e.help) for e in METHODS.values()]
    else:
        from distillab.data.sources import SOURCES

        rows = [(name, SOURCE_HELP.get(name, "")) for name in SOURCES]
    width = max(len(n) for n, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}".rstrip())


def cmd_report(args: argparse.Namespace, console: Console) -> None:
    from distillab.results.report import report_rows
    from distillab.results.stats import csv_table, markdown_table

    if args.html:
        from distillab.engine.checkpoint import atomic_write_text
        from distillab.results.html import build_html

        target = Path(args.html)
        if target.is_dir() or not target.parent.is_dir():
            raise UserError(f"--html {target}: give a file in an existing folder")
        if target.exists() or target.is_symlink():  # only a report distillab wrote is replaced
            head = b""
            if target.is_file():  # never open a FIFO or device: it could block
                try:
                    with target.open("rb") as f:
                        head = f.read(200)
                except OSError:
                    pass
            if not head.startswith(b"<!doctype html><html><head><meta charset='utf-8'><title>distillab report"):
                raise UserError(f"--html {target} exists and is not a distillab report; remove it or choose "
                                f"another name")
        atomic_write_text(target, build_html(Path(args.runs_dir), getattr(args, "command_line", None)))
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, images inlined): open it in a browser")
        return

    header, rows = report_rows(Path(args.runs_dir))
    print(csv_table(header, rows) if args.csv else markdown_table(header, rows))


def _profile_item(arg: str, args: argparse.Namespace) -> "Cost":
    """A model name, a run folder / model file, or an ONNX file → its cost row."""
    import tempfile

    from distillab.profile import Cost, batch_1_and_256, count_macs, latency_stats, onnx_latency_stats

    path = Path(arg)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UserError(f"ONNX file not found: {path}")
        try:
            import onnx
            import onnxruntime  # noqa: F401 - needed to time it
        except ImportError:
            raise UserError("profiling ONNX files needs onnx and onnxruntime: pip install 'distillab[export]'") from None
        try:
            graph = onnx.load(str(path)).graph
        except Exception as e:  # noqa: BLE001 - onnx raises many types for a bad file
            raise UserError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
        if not graph.input:
            raise UserError(f"{path} has no graph input to feed")
        params = sum(int(__import__("numpy").prod(t.dims)) for t in graph.initializer)
        all_dims = list(graph.input[0].type.tensor_type.shape.dim)
        if all_dims and len(all_dims) != 4:  # profile feeds (N, C, H, W) image batches
            raise UserError(f"{path} takes a rank-{len(all_dims)} input; profile times image models "
                            f"(N x C x H x W)")
        dims = [d.dim_value for d in all_dims][1:]
        shape = tuple(dims) if len(dims) == 3 and all(dims) else _parse_shape(args.input_shape)
        try:
            b1, b256 = batch_1_and_256(lambda b, r: onnx_latency_stats(str(path), shape, b, r), args.repeats)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (unknown op, bad graph)
            first = str(e).splitlines()[0][:160] if str(e) else ""
            raise UserError(f"{path} cannot be run by onnxruntime ({type(e).__name__}: {first})") from None
        return Cost(path.name, params, None, b1[0], b256[0], b1[1:], b256[1:])
    if path.is_dir() or path.suffix == ".safetensors":
        from distillab.export import load_student

        model, shape = load_student(path)
        name = str(path)
    else:
        from distillab.models import create_model

        shape = _parse_shape(args.input_shape)
        model, name = create_model(arg, args.num_classes, shape[0], shape[1]).eval(), arg
    params = sum(p.numel() for p in model.parameters())
    if args.runtime == "onnxruntime":
        from distillab.export import export_onnx

        with tempfile.TemporaryDirectory() as d:
            export_onnx(model, shape, Path(d) / "m.onnx")
            b1, b256 = batch_1_and_256(lambda b, r: onnx_latency_stats(str(Path(d) / "m.onnx"), shape, b, r),
                                       args.repeats)
    else:
        b1, b256 = batch_1_and_256(lambda b, r: latency_stats(model, shape, b, r), args.repeats)
    return Cost(name, params, count_macs(model, shape), b1[0], b256[0], b1[1:], b256[1:])


def _profile_accuracy(item: str, source: str, data_dir: str | None) -> float | None:
    """Test accuracy of a run folder / model file (PyTorch, its own normalisation) or of an ONNX
    file (onnxruntime, fed what its metadata says it takes: raw 0..1, uint8 or normalised
    images); None for a bare model name."""
    import json

    import torch

    from distillab.data import prepare_data

    path = Path(item)
    bundle = prepare_data(DataConfig(source=source, data_dir=data_dir, val_size=0), 0)
    raw, labels = bundle.test.x.cpu(), bundle.test.y.cpu()  # uint8 images as stored, no normalisation
    if path.suffix == ".onnx":
        import numpy as np
        import onnx
        import onnxruntime as ort

        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        first = session.get_inputs()[0]
        kind = meta.get("distillab.input", "")
        preds = []
        for i in range(0, len(raw), 500):
            x = raw[i:i + 500]
            if first.type == "tensor(uint8)":
                feed = x.numpy()
            elif kind.startswith("float32 0..1") or "distillab.mean" not in meta:
                feed = x.float().numpy() / 255.0
            else:  # exported --input normalized: normalise as its metadata says
                mean = np.array(json.loads(meta["distillab.mean"]), np.float32).reshape(1, -1, 1, 1)
                std = np.array(json.loads(meta["distillab.std"]), np.float32).reshape(1, -1, 1, 1)
                feed = (x.float().numpy() / 255.0 - mean) / std
            preds.append(torch.from_numpy(session.run(None, {first.name: feed})[0]).argmax(1))
        return float((torch.cat(preds) == labels).float().mean())
    if path.is_dir() or path.suffix == ".safetensors":
        from distillab.engine.checkpoint import read_model_spec
        from distillab.engine.trainer import evaluate
        from distillab.export import load_student

        model, _ = load_student(path)
        norm = read_model_spec(path)[1].get("normalize")
        bundle = prepare_data(DataConfig(source=source, data_dir=data_dir, val_size=0), 0, normalization=norm)
        return evaluate(model, bundle.test)["acc"]
    return None


def cmd_profile(args: argparse.Namespace, console: Console) -> None:
    from distillab.profile import cost_table
    from distillab.results.stats import markdown_table

    _import_modules(args.imports)
    if args.num_classes < 1 or args.repeats < 1:
        raise UserError("--num-classes and --repeats must be at least 1")
    header, rows = cost_table([_profile_item(m, args) for m in args.models])
    if args.data:
        header.append(f"{args.data} test acc (%)")
        for row, item in zip(rows, args.models):
            acc = _profile_accuracy(item, args.data, args.data_dir)
            row.append("—" if acc is None else f"{100 * acc:.2f}")
    print(markdown_table(header, rows))
    print(f"\nCPU latency ({args.runtime}; .onnx files always in onnxruntime; their BatchNorm layers, if any, "
          f"are folded into the convs, hence fewer params): median [inter-quartile range] over {args.repeats} repeats at batch 1, "
          f"max(5, repeats/4) at 256, after 3 warm-up passes; speed-up = latency@256 of {args.models[0]} / latency@256, "
          f"compression = params of {args.models[0]} / params.")


def cmd_export(args: argparse.Namespace, console: Console) -> None:
    from distillab.export import export_onnx, export_torchscript, for_deployment, load_student_spec

    _import_modules(args.imports)
    if not (args.onnx or args.torchscript):
        raise UserError("say what to write: --onnx FILE and/or --torchscript FILE")
    targets = [(flag, Path(f)) for flag, f in (("--onnx", args.onnx), ("--torchscript", args.torchscript)) if f]
    if len(targets) == 2 and targets[0][1].resolve() == targets[1][1].resolve():
        raise UserError("--onnx and --torchscript name the same file; give two names")
    for flag, target in targets:  # an export never replaces a file (a run's own model, the user's files)
        if target.exists() or target.is_symlink():
            raise UserError(f"{flag} {target} already exists; distillab export never replaces a file: remove it "
                            f"or choose a new name")
    net, shape, spec = load_student_spec(args.run)
    model, meta = for_deployment(net, spec, args.input)
    what = meta["distillab.input"]
    if args.onnx:
        diff = export_onnx(model, shape, args.onnx, metadata=meta)
        print(f"wrote {args.onnx} (input N x {'x'.join(map(str, shape))}, any N, {what}; metadata_props: "
              f"{', '.join(k.split('.', 1)[1] for k in meta)}); max |onnxruntime - PyTorch| on a random batch: {diff:.2e}")
    if args.torchscript:
        diff = export_torchscript(model, shape, args.torchscript, metadata=meta)
        print(f"wrote {args.torchscript}; max |TorchScript - PyTorch| on a random batch: {diff:.2e}")


def default_out(config: Path) -> Path:
    """runs/<folder>-<name> for configs/<folder>/<name>.yaml (configs of different studies share
    names — bit/fashion-mnist.yaml, hinton/fashion-mnist.yaml — and must not share a folder);
    runs/<name> for any other config file."""
    where = config.resolve().parent
    return Path("runs") / (f"{where.name}-{config.stem}" if where.parent.name == "configs" else config.stem)


def _study_options(p: argparse.ArgumentParser, out_default: str | None, out_help: str) -> None:
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config, values in YAML, "
                   "e.g. seeds=[0,1] student.train.epochs=5")
    p.add_argument("--out", default=out_default, help=out_help)
    p.add_argument("--data-dir", help="folder holding the dataset files (every data section of the config)")
    p.add_argument("--resume", action="store_true", help="continue runs that were interrupted")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each finished run's resume checkpoint (optimiser state, connectors) beside its model")
    p.add_argument("--quiet", action="store_true", help="print only the results table (and errors)")
    p.add_argument("--restart", action="store_true",
                   help="discard unfinished runs (e.g. after a NaN loss, or to change their config) and train them "
                        "anew; finished runs are never discarded")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present; the same as "
                   "$DISTILLAB_DEVICE)")


def _set_device(device: str | None) -> None:
    """``--device``: checked now (a clear error when CUDA is not there), then used by every run."""
    if device is None:
        return
    import os

    from distillab.engine.trainer import choose_device

    choose_device(device)
    os.environ["DISTILLAB_DEVICE"] = device


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
    from distillab.models import create_model

    shape, classes = (1, 28, 28), 10
    for i, d in enumerate(find_all(cfg, DataConfig)):
        if d.source.startswith("webdataset:"):  # shards: read the metadata, never the data
            from distillab.compat import require
            from distillab.data.streaming import read_meta

            require("webdataset", "stream", f"data.source {d.source}")
            meta = read_meta(Path(d.source.split(":", 1)[1]).expanduser())
            found = tuple(meta["shape"]), len(meta["classes"])
        else:
            ds = _cached_source(d.source, d.data_dir, d.image_size, d.channels)
            found = ds.shape, ds.num_classes
        if i == 0:
            shape, classes = found
    with torch.device("meta"):
        for m in find_all(cfg, ModelConfig):
            kwargs = {k: v for k, v in m.kwargs.items() if k != "checkpoint"}  # weights: checked per run
            create_model(m.name, classes, shape[0], shape[-1], **kwargs)


def _names_epilog() -> str:
    """What configs can name, for the top-level --help (details: `distillab list KIND`)."""
    import textwrap

    from distillab.methods import METHODS
    from distillab.models import MODELS
    from distillab.recipes import RECIPES

    models = ", ".join(f"{e.name}:ARG" if e.takes_arg and e.pattern is None else
                       (e.help.split(" — ")[0] if " — " in e.help else e.name) for e in MODELS.values())
    lines = [f"recipes: {', '.join(RECIPES)}", f"methods: {', '.join(METHODS)}", f"models:  {models}",
             "`distillab list recipes|models|methods|sources` describes each; docs: README.md, docs/.",
             "example: distillab run configs/benchmark/fashion-mnist.yaml seeds=[0] --out runs/bench"]
    return "\n".join(textwrap.fill(ln, 100, subsequent_indent="         ") for ln in lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillab", description="Transfer learning and knowledge distillation lab.",
                                epilog=_names_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe from a YAML config",
                       epilog="example: distillab run configs/hinton/fashion-mnist.yaml seeds=[0] --out runs/h")
    r.add_argument("config", help="YAML file whose `recipe:` key picks the study (see `distillab list recipes`)")
    r.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import a Python module first, e.g. one that registers your own models (repeatable)")
    _study_options(r, out_default=None, out_help="output folder (default runs/<config folder>-<config name>)")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: train the runs here, one after another; ray: submit each run as a Ray task as soon "
                        "as the runs it reads are finished (the same folders and tables)")
    r.add_argument("--address", default=None, help="Ray cluster to join (HOST:PORT from `ray start --head`); "
                                                   "default: start Ray on this machine")
    r.add_argument("--ray-cpus", type=float, default=1, help="CPUs per run under --executor ray (default 1)")
    r.add_argument("--ray-gpus", type=float, default=0, help="GPUs per run under --executor ray (default 0)")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="Hinton distillation on Fashion-MNIST at CPU scale",
                       epilog="example: distillab demo seeds=[0] --out runs/demo1   (one seed, about 3 minutes)")
    _study_options(d, out_default="runs/demo", out_help="output folder")
    d.set_defaults(func=cmd_demo)

    ls = sub.add_parser("list", help="what can be named in a config: recipes, models, methods, sources",
                        epilog="example: distillab list methods")
    ls.add_argument("kind", choices=LIST_KINDS, help="what to list")
    ls.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                    help="import a module first, so its registered models/methods are listed too")
    ls.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="table of all finished runs under a folder, mean ± std over seeds",
                         epilog="example: distillab report runs/demo --html demo.html")
    rep.add_argument("runs_dir", help="a study's output folder, or a folder of them (e.g. runs/)")
    rep.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    rep.add_argument("--html", metavar="FILE", help="write one self-contained HTML page: every study's table, "
                     "its plots, learning curves, accuracy vs mult-adds, and the command that made it")
    rep.set_defaults(func=cmd_report)

    pr = sub.add_parser("profile", help="params, mult-adds, latency (median, IQR), speed-up, compression",
                        epilog="example: distillab profile runs/demo/teacher/seed0 runs/demo/distilled/seed0 "
                               "student.onnx")
    pr.add_argument("models", nargs="+", help="model names (see `distillab list models`), run folders, "
                    "model.safetensors or .onnx files; the first is the reference for speed-up and compression")
    pr.add_argument("--input-shape", default="1x28x28", help="CxHxW of one image, for model names (run folders "
                    "and ONNX files know their own)")
    pr.add_argument("--num-classes", type=int, default=10, help="classes of models built from a name")
    pr.add_argument("--repeats", type=int, default=20, help="timed forward passes at batch 1 (a quarter at 256)")
    pr.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                    help="time PyTorch eager, or the model exported to ONNX in onnxruntime")
    pr.add_argument("--data", metavar="SOURCE", default=None,
                    help="also measure test accuracy on this source: run folders in PyTorch, .onnx files in "
                         "onnxruntime fed the raw images their metadata asks for")
    pr.add_argument("--data-dir", default=None, help="where the --data source's files are")
    pr.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                    help="import a module first, e.g. one registering the model a run was built with")
    pr.set_defaults(func=cmd_profile)

    ex = sub.add_parser("export", help="write a run's student as ONNX and/or TorchScript, checked against PyTorch",
                        epilog="example: distillab export runs/demo/distilled/seed0 --onnx student.onnx")
    ex.add_argument("run", help="run folder (or model.safetensors): only the student is exported, no connectors")
    ex.add_argument("--onnx", metavar="FILE", help="ONNX file to write (dynamic batch axis)")
    ex.add_argument("--torchscript", metavar="FILE", help="TorchScript file to write (traced)")
    ex.add_argument("--input", choices=["raw", "uint8", "normalized"], default="raw",
                    help="what the exported graph takes: raw float 0..1 images (default) or uint8 0..255, "
                         "normalised inside the graph; or already normalised ones (the bare network)")
    ex.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                    help="import a module first, e.g. one registering the model a run was built with")
    ex.set_defaults(func=cmd_export)

    da = sub.add_parser("data", help="data tools: pack a source as WebDataset shards for streaming",
                        epilog="example: distillab data pack fashion-mnist shards/fmnist --val 5000")
    dsub = da.add_subparsers(dest="data_command", required=True, help="pack: write WebDataset shards")
    pk = dsub.add_parser("pack", help="write a source as WebDataset tar shards (train / val / test) + meta.json",
                         epilog="example: distillab data pack fashion-mnist shards/fmnist --val 5000; then "
                                "`source: webdataset:shards/fmnist` in a config")
    pk.add_argument("source", help="a built-in source (fashion-mnist, cifar10, …) or imagefolder:PATH")
    pk.add_argument("out", help="an empty (or new) folder for the shards")
    pk.add_argument("--shard-size", type=int, default=10_000, help="examples per shard (default 10000)")
    pk.add_argument("--val", type=int, default=5000, help="training examples held out as the val split (seeded)")
    pk.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    pk.add_argument("--limit", type=int, default=None, help="keep only this many training examples (seeded)")
    pk.add_argument("--data-dir", default=None, help="where the source's files are")
    pk.add_argument("--image-size", type=int, default=None,
                    help="imagefolder: resize every image to this side length (default: keep their own size)")
    pk.add_argument("--channels", type=int, choices=(1, 3), default=None,
                    help="imagefolder: convert to 1 (grey) or 3 (RGB) channels (default: 1 if every image is grey)")
    pk.set_defaults(func=cmd_data_pack)
    return p


def cmd_data_pack(args: argparse.Namespace, console: Console) -> None:
    from distillab.data.streaming import pack

    if args.shard_size < 1 or args.val < 0 or (args.limit is not None and args.limit < 1):
        raise UserError("data pack: --shard-size and --limit must be positive, --val non-negative")
    if args.image_size is not None and not 4 <= args.image_size <= 4096:
        raise UserError(f"data pack: --image-size {args.image_size} must be between 4 and 4096 pixels")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"data pack: --seed {args.seed} must be between 0 and 2**32 - 1")
    meta = pack(args.source, Path(args.out), shard_size=args.shard_size, val=args.val, seed=args.seed,
                data_dir=args.data_dir, image_size=args.image_size, channels=args.channels, limit=args.limit)
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(f"wrote {sum(len(v) for v in meta['shards'].values())} shards to {args.out} ({counts}); "
          f"use `source: webdataset:{args.out}`")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options (``run c.yaml --out o a.b=1``): collect them from the rest.
    args, rest = parser.parse_known_args(argv)
    extra = [a for a in rest if "=" in a and not a.startswith("-")]
    if len(extra) != len(rest) or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    import shlex

    args.command_line = "distillab " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    console = Console(stderr=False)
    try:
        from distillab.compat import check_torch_pair

        check_torch_pair()
        args.func(args, console)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: input nested too deeply (a recursive YAML alias?)", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the user named: not a bug, one line and exit 2
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
