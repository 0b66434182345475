"""Startup checks of the environment: a torch/torchvision pair that pip can install apart (each
pins nothing of the other) otherwise fails deep inside torchvision with
``operator torchvision::nms does not exist``."""

from __future__ import annotations

import functools
import re
from importlib import metadata

from distillab.errors import UserError


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def torchvision_for(torch_version: str) -> str | None:
    """The torchvision series built for a torch 2.x release (2.0 ↔ 0.15, …, 2.14 ↔ 0.29)."""
    v = _minor(torch_version)
    return f"0.{v[1] + 15}" if v and v[0] == 2 else None


def pair_error(torch_version: str, vision_version: str) -> str | None:
    """The one-line error for a mismatched pair, or None when they match (or are unknown)."""
    want, have = torchvision_for(torch_version), _minor(vision_version)
    if want is None or have is None or f"{have[0]}.{have[1]}" == want:
        return None
    other = f" (or the torch for your torchvision: pip install 'torch==2.{have[1] - 15}.*')" \
        if have[0] == 0 and have[1] >= 15 else ""
    return (f"torch {torch_version} and torchvision {vision_version} do not match (torch {torch_version} needs "
            f"torchvision {want}.x): pip install 'torchvision=={want}.*'{other}")


@functools.lru_cache(maxsize=1)
def check_torch_pair() -> None:
    """Raise :class:`UserError` when the installed torch and torchvision do not match (read from the
    package metadata, so nothing is imported)."""
    try:
        torch_version, vision_version = metadata.version("torch"), metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return
    message = pair_error(torch_version, vision_version)
    if message:
        raise UserError(message)


def require(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install when an optional dependency is missing, raised before
    anything is written (a streamed run used to crash mid-way, leaving a folder that asked for
    --resume)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs {module}, an optional extra: pip install 'distillab[{extra}]'")


_SAID: set[str] = set()


def say_once(key: str, message: str) -> None:
    """Print ``message`` on stderr the first time ``key`` is seen in this process."""
    import sys

    if key not in _SAID:
        _SAID.add(key)
        print(message, file=sys.stderr, flush=True)
