"""What distillab owns on disk: a marker file in every folder it creates.

distillab deletes or overwrites a file only when it can show that it wrote it: each run folder,
study folder (``--out``) and pack folder holds ``.distillab`` — JSON with the folder's kind and,
for a study folder, the files distillab wrote there. A folder without the marker is the user's:
anything in it that distillab would replace is a one-line error instead.

Folders written before markers existed are recognised by distillab's own records in them (a run
folder's ``config.yaml`` with its derived seed, a study's ``study.json``), and adopted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from distillab.errors import UserError

MARKER = ".distillab"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None when it has none (or one that is not distillab's JSON)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return None
    files = data.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return data


def has_marker(folder: Path, kind: str) -> bool:
    m = read_marker(folder)
    return m is not None and m["kind"] == kind


def write_marker(folder: Path, kind: str, files: Iterable[str] = ()) -> None:
    """Write (atomically) the marker of a folder distillab owns, listing ``files`` it wrote there."""
    from distillab.engine.checkpoint import atomic_write_text

    atomic_write_text(folder / MARKER, json.dumps({"kind": kind, "files": sorted(set(files))}))


def is_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and next(os.scandir(folder), None) is None)


def owned_files(folder: Path, kind: str) -> set[str]:
    m = read_marker(folder)
    return set(m.get("files", [])) if m is not None and m["kind"] == kind else set()


def check_can_write(folder: Path, names: Iterable[str], kind: str, hint: str) -> None:
    """Refuse (one line) when a file distillab is about to write exists and distillab did not write it."""
    mine = owned_files(folder, kind)
    for name in names:
        p = folder / name
        if (p.exists() or p.is_symlink()) and name not in mine:
            raise UserError(f"{p} exists and was not written by distillab; move it away or {hint}")


def safe_name(name: str, what: str) -> str:
    """A relative folder name made of plain parts: no absolute path, no '..', no empty part, no NUL or
    control characters — so a run name from a config can never point outside its study folder."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{what}: an empty name")
    parts = name.split("/")
    bad = (name.startswith(("/", "\\", "~")) or "\\" in name or any(ord(ch) < 32 or ch == "\x7f" for ch in name)
           or any(p in ("", ".", "..") or p.startswith(".") or len(p) > 200 for p in parts) or len(parts) > 8)
    if bad:
        raise UserError(f"{what}: {name!r} is not a plain relative name (letters, digits, '-', '_', '.'; no "
                        f"'..', leading '.', absolute path or control character)")
    return name


# ---------------------------------------------------------------- study folders (--out)
def _legacy_study(out: Path) -> bool:
    """A study folder written before markers existed: its ``study.json`` is distillab's record, or it
    holds distillab run folders (``<name>[/<sub>]/seed<k>/config.yaml`` with the derived seeds)."""
    import json

    import yaml

    try:
        rec = json.loads((out / "study.json").read_text(encoding="utf-8"))
        if isinstance(rec, dict) and {"command", "config_yaml"} <= set(rec):
            return True
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    for cfg in [*out.glob("*/seed*/config.yaml"), *out.glob("*/*/seed*/config.yaml")][:20]:
        try:
            saved = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(saved, dict) and {"seed", "run_seed"} <= set(saved):
            return True
    return False


def check_study_folder(out: Path) -> None:
    """Refuse an ``--out`` that distillab did not make and that is not empty (a project folder, a
    folder of the user's files): the study would write its tables over theirs. Reads only."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a folder")
    if is_empty(out) or has_marker(out, "study") or _legacy_study(out):
        return
    raise UserError(f"--out {out} is not empty and was not made by distillab (no {MARKER} marker); choose a new "
                    f"or empty folder")


def claim_study_folder(out: Path) -> None:
    """Create the study folder if needed and mark it as distillab's (before its first file is written).
    A legacy study folder is adopted with the result files it already holds."""
    if has_marker(out, "study"):
        return
    check_study_folder(out)
    import re

    out.mkdir(parents=True, exist_ok=True)
    known = re.compile(r"(results.*\.(md|csv)|study\.json|costs\.json|[\w-]+\.(png|svg))")
    adopted = [p.name for p in out.iterdir() if p.is_file() and known.fullmatch(p.name)] if _legacy_study(out) else []
    write_marker(out, "study", adopted)
