"""Method registry: ``@register_method(Config)`` on an objective class makes it selectable as
``method: {name: ...}`` in any config. A new method is one new file in this package (the package
imports every module in it), with no list to keep in sync."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from distillab.errors import UserError
from distillab.registry import Registry

if TYPE_CHECKING:
    from distillab.methods.base import BaseTeacher, Objective


class Context:
    """What objectives may need besides their config and the student.

    ``teacher``: a ready :class:`Teacher` (Python API) — else ``load_teacher`` builds one from the
    config's ``teacher`` paths. ``in_shape``: (C, H, W) of the inputs. ``num_train``: training-set
    size (memory banks indexed by example, e.g. CRD). ``epochs``: length of training, so a method
    can turn the trainer's ``progress`` (0 → 1) into epochs (e.g. DKD's 20-epoch warm-up).
    """

    def __init__(self, load_teacher: Callable[[list[str]], "BaseTeacher"] | None = None,
                 in_shape: tuple[int, ...] = (), *, teacher: "BaseTeacher | None" = None, num_train: int = 0,
                 epochs: int = 1) -> None:
        self._load_teacher = load_teacher
        self._teacher = teacher
        self.in_shape = in_shape
        self.num_train = num_train
        self.epochs = epochs

    def teacher(self, cfg: Any) -> "BaseTeacher":
        """The teacher for ``cfg``: the one handed in, else the runs named by ``cfg.teacher``."""
        if self._teacher is not None:
            return self._teacher
        paths: Sequence[str] = getattr(cfg, "teacher", None) or []
        if not paths or self._load_teacher is None:
            raise UserError(f"method {cfg.name}: needs a teacher (method.teacher: [RUN_DIR, ...], "
                            f"or pass teacher= from Python)")
        self._teacher = self._load_teacher(list(paths))  # loaded once per build
        return self._teacher


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config: type
    objective: type["Objective"]
    help: str


METHODS: Registry[MethodEntry] = Registry("method", "; `distillab list methods` describes them")
ObjT = TypeVar("ObjT", bound="type[Objective]")


def register_method(config: type) -> Callable[[ObjT], ObjT]:
    """Class decorator: register an :class:`Objective` subclass with its pydantic config class,
    whose ``name`` field (a ``Literal``) is the method's name in configs."""
    name = getattr(config, "model_fields")["name"].default  # a pydantic model class

    def deco(cls: ObjT) -> ObjT:
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        METHODS.add(name, MethodEntry(name, config, cls, doc), cls.__module__)
        return cls

    return deco


def build_objective(cfg: Any, student: nn.Module, ctx: Context) -> "Objective":
    """Build the objective named by ``cfg.name``."""
    entry = METHODS.get_entry(cfg.name)
    if "student_layers" in type(cfg).model_fields:  # a feature method: choose both networks' taps first
        from distillab.methods.features import named_pairs, prepare_taps

        n_s = prepare_taps(student, ctx.in_shape, cfg.student_layers, "student")
        n_t = prepare_taps(ctx.teacher(cfg).single(cfg.name), ctx.in_shape, cfg.teacher_layers, "teacher")
        pairs = named_pairs(n_s, n_t, cfg)
        if pairs is not None and "pairs" in type(cfg).model_fields and cfg.pairs is None:
            cfg = cfg.model_copy(update={"pairs": pairs})
    return entry.objective.from_config(cfg, student, ctx)
