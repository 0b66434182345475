"""One small registry type behind every extension point: models, methods, sources and recipes.

A :class:`Registry` is a ``dict`` of name → entry (so ``MODELS[name]``, ``", ".join(METHODS)``
keep working) with what timm's ``_registry.py`` adds: the module that registered each name,
``list()`` with a glob filter, a warning when another module registers a name already taken, and
:meth:`get` raising one ``unknown X 'name'; did you mean …? (known: …)`` line.
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Generic, TypeVar

from distillab.errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Name → entry, for one kind of thing (``kind`` names it in messages: "model", "method" …)."""

    def __init__(self, kind: str, hint: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.hint = hint  # appended to "unknown" errors, e.g. "; `distillab list models` describes them"
        self.modules: dict[str, str] = {}  # name → the module that registered it

    def add(self, name: str, entry: T, module: str) -> T:
        """Register ``entry`` under ``name``; a name taken by *another* module is replaced with a
        warning (re-importing the same module, e.g. in a Ray worker, replaces it silently)."""
        old = self.modules.get(name)
        if name in self and old != module:
            warnings.warn(f"{self.kind} {name!r} registered by {old} is replaced by {module}'s", stacklevel=3)
        self[name] = entry
        self.modules[name] = module
        return entry

    def get_entry(self, name: object, where: str = "") -> T:
        """The entry for ``name``, else a :class:`UserError` naming the known ones (and the closest)."""
        if isinstance(name, str) and name in self:
            return self[name]
        raise UserError(self.unknown(name, where))

    def unknown(self, name: object, where: str = "", hint: str | None = None) -> str:
        """The one-line message for an unknown ``name`` (``hint``: a ready "did you mean" text)."""
        close = did_you_mean(name, self) if hint is None else hint
        return f"{where}{self.kind} {name!r} unknown{close} (known: {', '.join(self)}){self.hint}"

    def list(self, pattern: str = "*", module: str | None = None) -> list[str]:
        """Registered names matching the glob ``pattern``, optionally only those ``module`` registered."""
        return [n for n in self if fnmatch.fnmatchcase(n, pattern)
                and (module is None or self.modules.get(n, "").startswith(module))]

    def builtin(self, name: str) -> bool:
        """Whether ``name`` was registered by distillab itself (not a user's ``--import``)."""
        return self.modules.get(name, "").startswith("distillab.")


def import_submodules(package: str, path: list[str], skip: tuple[str, ...] = ()) -> None:
    """Import every module of a package (its ``@register_…`` decorators run): a new model family,
    method, source or recipe is one new file, with no import list to keep in sync."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(path):
        if mod.name not in skip:
            importlib.import_module(f"{package}.{mod.name}")
