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

from rich.console import Console

from distillab.config import apply_overrides, load_yaml
from distillab.errors import UserError
from distillab.studies import default_out, demo_intro, import_modules, ray_executor, run_config, set_device

__all__ = ["build_parser", "main", "run_config"]
DEMO_PRESET = "hinton-demo.yaml"


def cmd_run(args: argparse.Namespace, console: Console) -> None:
    import_modules(args.imports)
    set_device(args.device)
    data = apply_overrides(load_yaml(args.config), args.overrides)
    out = Path(args.out) if args.out else default_out(Path(args.config))
    executor = ray_executor(args.address, args.ray_cpus, args.ray_gpus, args.imports)  # checked even unused
    if args.executor != "ray":
        executor = None
    if args.address and executor is None:
        raise UserError("--address names a Ray cluster: use it with --executor ray")
    run_config(data, out, console, str(args.config), args.resume, args.data_dir, args.keep_checkpoints, args.quiet,
               args.command_line, args.restart, executor)


def cmd_demo(args: argparse.Namespace, console: Console) -> None:
    set_device(args.device)
    text = resources.files("distillab.presets").joinpath(DEMO_PRESET).read_text()
    import yaml

    data = apply_overrides(yaml.safe_load(text), args.overrides)
    if not args.quiet:
        console.print(demo_intro(data), highlight=False)
    run_config(data, Path(args.out), console, f"demo preset {DEMO_PRESET}", args.resume, args.data_dir,
               args.keep_checkpoints, args.quiet, args.command_line, args.restart)
    if not args.quiet:
        console.print("Read more: docs/studies/hinton.md (this study), docs/results.md (every verdict), "
                      "docs/methods/kd.md (the loss and its keys); `distillab list recipes` for the other studies.",
                      highlight=False)


LIST_KINDS = ("recipes", "models", "methods", "sources")


def list_rows(kind: str) -> list[tuple[str, str]]:
    """(how a config names it, one line of help) for each registered recipe, model family, method
    or data source: `distillab list` is read off the registries."""
    if kind == "recipes":
        from distillab.recipes import RECIPES

        return [(e.name, e.help) for e in RECIPES.values()]
    if kind == "models":
        from distillab.models import MODELS

        return [(e.help.split(" — ")[0] if " — " in e.help else e.name, e.help.split(" — ")[-1])
                for e in MODELS.values()]
    if kind == "methods":
        from distillab.methods import METHODS

        return [(e.name, e.help) for e in METHODS.values()]
    from distillab.data import SOURCES

    return [(e.shape, e.help) for e in SOURCES.values()]


def cmd_list(args: argparse.Namespace, console: Console) -> None:
    """One line per recipe, model family, method or data source."""
    import_modules(args.imports)
    rows = list_rows(args.kind)
    width = max(len(n) for n, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}".rstrip())


def cmd_report(args: argparse.Namespace, console: Console) -> None:
    from distillab.results.report import report_rows
    from distillab.results.stats import csv_table, markdown_table

    if args.html:
        from distillab.engine.checkpoint import atomic_write_text
        from distillab.results.html import build_html, check_html_target

        target = Path(args.html)
        check_html_target(target)
        atomic_write_text(target, build_html(Path(args.runs_dir), getattr(args, "command_line", None)))
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, images inlined): open it in a browser")
        return

    header, rows = report_rows(Path(args.runs_dir))
    print(csv_table(header, rows) if args.csv else markdown_table(header, rows))


def cmd_profile(args: argparse.Namespace, console: Console) -> None:
    from distillab.profile import cost_table, latency_note, profile_accuracy, profile_item
    from distillab.results.stats import markdown_table

    import_modules(args.imports)
    if args.num_classes < 1 or args.repeats < 1:
        raise UserError("--num-classes and --repeats must be at least 1")
    header, rows = cost_table([profile_item(m, args.input_shape, args.num_classes, args.repeats, args.runtime)
                               for m in args.models])
    if args.data:
        header.append(f"{args.data} test acc (%)")
        for row, item in zip(rows, args.models, strict=True):
            acc = profile_accuracy(item, args.data, args.data_dir)
            row.append("—" if acc is None else f"{100 * acc:.2f}")
    print(markdown_table(header, rows))
    print(latency_note(args.runtime, args.repeats, args.models[0]))


def cmd_export(args: argparse.Namespace, console: Console) -> None:
    from distillab.export import check_targets, export_onnx, export_torchscript, for_deployment, load_student_spec

    import_modules(args.imports)
    if not (args.onnx or args.torchscript):
        raise UserError("say what to write: --onnx FILE and/or --torchscript FILE")
    check_targets(args.onnx, args.torchscript)
    net, shape, spec = load_student_spec(args.run)
    model, meta = for_deployment(net, spec, args.input)
    what = meta["distillab.input"]
    if args.onnx:
        diff = export_onnx(model, shape, args.onnx, metadata=meta)
        print(f"wrote {args.onnx} (input N x {'x'.join(map(str, shape))}, any N, {what}; metadata_props: "
              f"{', '.join(k.split('.', 1)[1] for k in meta)}); max |onnxruntime - PyTorch| on a random batch: "
              f"{diff:.2e}")
    if args.torchscript:
        diff = export_torchscript(model, shape, args.torchscript, metadata=meta)
        print(f"wrote {args.torchscript}; max |TorchScript - PyTorch| on a random batch: {diff:.2e}")


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


def _import_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=help + " (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillab", description="Transfer learning and knowledge distillation lab.",
                                epilog=_names_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe from a YAML config",
                       epilog="example: distillab run configs/hinton/fashion-mnist.yaml seeds=[0] --out runs/h")
    r.add_argument("config", help="YAML file whose `recipe:` key picks the study (see `distillab list recipes`)")
    _import_option(r, "import a Python module first, e.g. one registering your models, methods, sources, recipes")
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
    _import_option(ls, "import a module first, so its registered models/methods are listed too")
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
    _import_option(pr, "import a module first, e.g. one registering the model a run was built with")
    pr.set_defaults(func=cmd_profile)

    ex = sub.add_parser("export", help="write a run's student as ONNX and/or TorchScript, checked against PyTorch",
                        epilog="example: distillab export runs/demo/distilled/seed0 --onnx student.onnx")
    ex.add_argument("run", help="run folder (or model.safetensors): only the student is exported, no connectors")
    ex.add_argument("--onnx", metavar="FILE", help="ONNX file to write (dynamic batch axis)")
    ex.add_argument("--torchscript", metavar="FILE", help="TorchScript file to write (traced)")
    ex.add_argument("--input", choices=["raw", "uint8", "normalized"], default="raw",
                    help="what the exported graph takes: raw float 0..1 images (default) or uint8 0..255, "
                         "normalised inside the graph; or already normalised ones (the bare network)")
    _import_option(ex, "import a module first, e.g. one registering the model a run was built with")
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
    pk.add_argument("--image-size", type=int, help="imagefolder: resize every image to this side (default: their own)")
    pk.add_argument("--channels", type=int, choices=(1, 3), default=None,
                    help="imagefolder: convert to 1 (grey) or 3 (RGB) channels (default: 1 if every image is grey)")
    pk.set_defaults(func=cmd_data_pack)
    return p


def cmd_data_pack(args: argparse.Namespace, console: Console) -> None:
    from distillab.data.streaming import pack

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
