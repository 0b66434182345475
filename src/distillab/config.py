"""Configuration: pydantic models shared by recipes, YAML loading and ``a.b=v`` overrides.

Each recipe owns its own config class (see :mod:`distillab.recipes`); this module holds the
pieces they compose (data, model, optimisation) and the loading/validation plumbing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from distillab.errors import UserError


class Strict(BaseModel):
    """Base for all config models: unknown keys are errors, not silently ignored."""

    # allow_inf_nan=False: a float key of .inf or .nan is an error naming the key, not a NaN loss later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _distinct(seeds: list[int]) -> list[int]:
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:  # one run counted twice gives a zero-width interval and a firm verdict from nothing
        raise ValueError(f"seed {dup[0]} is listed twice; each seed is one independent run")
    return seeds


Seed = Annotated[int, Field(ge=0, lt=2**32, description="a random seed, 0 <= seed < 2**32")]
Seeds = Annotated[list[Seed], AfterValidator(_distinct)]


class AugmentConfig(Strict):
    """Per-sample augmentation applied on whole batches (see :mod:`distillab.data.loader`)."""

    jitter: int = Field(0, ge=0, le=1024, description="random translation by up to this many pixels, zero fill")
    crop_padding: int = Field(0, ge=0, le=1024, description="random crop after reflect-padding by this many pixels")
    hflip: bool = False
    crop: int | None = Field(None, ge=1, le=4096, description="random crop of this size (evaluation: centre crop)")
    resized_crop: tuple[float, float] | None = Field(
        None, description="random-resized crop: area fraction range, e.g. [0.35, 1.0] (aspect 3/4..4/3)")

    @field_validator("resized_crop")
    @classmethod
    def _crop_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1] <= 1:
            raise ValueError("needs 0 < min <= max <= 1")
        return v


class ClassSplitConfig(Strict):
    """Split a dataset's classes into halves A and B and keep one (labels re-indexed 0..k-1).

    ``random``: a seeded random half; ``semantic``: the named grouping shipped for the dataset
    (see :data:`distillab.data.splits.SEMANTIC_SPLITS`); ``a``: an explicit list of class names or
    indices for A (B is the rest).
    """

    split: Literal["random", "semantic", "explicit"] = "random"
    part: Literal["A", "B"] = "A"
    seed: Seed = 0
    a: list[str | int] | None = None


class DataConfig(Strict):
    """Which data, how it is split, and how batches are made."""

    source: str = "fashion-mnist"
    data_dir: str | None = None
    image_size: int | None = Field(None, ge=4, le=4096, description="imagefolder sources: resize every image to this "
                                   "side length (default: keep the images' own size, if they share one)")
    channels: Literal[1, 3] | None = Field(None, description="imagefolder sources: convert to 1 (grey) or 3 (RGB) "
                                           "channels (default: 1 when every image is grey, else 3)")
    resize: int | None = Field(
        None, ge=4, le=4096, description="resize every image to this side length once, in memory"
    )
    val_size: int = Field(5000, ge=0, description="examples held out of the training set for validation")
    train_subset: int | None = Field(None, ge=1, description="use only this many training examples (seeded)")
    classes: ClassSplitConfig | None = Field(None, description="keep only half A or B of the classes")
    shots: int | None = Field(None, ge=1, description="few-shot: keep k training examples per class (seeded)")
    fraction: float | None = Field(None, gt=0, le=1, description="keep this fraction of the training set (stratified)")
    batch_size: int = Field(128, ge=1)
    steps_per_epoch: int | None = Field(
        None, ge=1, description="draw this many full batches per epoch from a stream of seeded shuffles instead of "
                                "one pass: a set smaller than a batch repeats its examples within it (BiT's few-shot "
                                "sampling keeps the batch size)")
    eval_view: Literal["center_crop", "resize"] = Field(
        "center_crop", description="with augment.crop: evaluate on the centre crop, or on the whole image resized "
                                   "to the crop size (BiT)")
    eval_batch_size: int = Field(1000, ge=1)
    num_workers: int = Field(2, ge=0, description="decoding processes for streaming sources (webdataset:PATH)")
    augment: AugmentConfig = AugmentConfig()

    @field_validator("channels")
    @classmethod
    def _channels_of_image_folders(cls, v: int | None, info: Any) -> int | None:
        # Built-in sources have fixed channels, and shards keep those they were packed with: a
        # conversion there would be ignored silently.
        source = info.data.get("source", "")
        if v is not None and not source.startswith("imagefolder:"):
            how = " (pack with `data pack --channels`)" if source.startswith("webdataset:") else ""
            raise ValueError(f"applies to imagefolder:PATH sources only, not {source!r}{how}")
        return v


def _plain_data(value: Any, budget: int = 10_000) -> None:
    """Raise ValueError unless ``value`` is a small tree of YAML scalars, lists and mappings: no
    cycles (a self-referencing alias) and no exponential fan-out ("billion laughs" aliases)."""
    seen = 0
    stack: list[tuple[Any, tuple[int, ...]]] = [(value, ())]
    while stack:
        node, ancestors = stack.pop()
        seen += 1
        if seen > budget:
            raise ValueError(f"more than {budget} values: not a model's keyword arguments")
        if isinstance(node, (dict, list, tuple)):
            if id(node) in ancestors:
                raise ValueError("refers to itself (a recursive YAML alias)")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, ancestors + (id(node),)) for c in children)
        elif not isinstance(node, (str, int, float, bool, type(None))):
            raise ValueError(f"holds a {type(node).__name__}; use plain YAML values")


class SoftLabelCacheConfig(Strict):
    """Train from the teacher's stored outputs instead of running it every step."""

    views: int = Field(1, ge=1, le=1024, description="augmented views stored per example (1: one fixed view, "
                                                    "what a run without augmentation needs)")
    top_k: int | None = Field(None, ge=1, description="classes stored per view (fp16 log-probabilities, int16 "
                                                       "indices); unset: all classes")
    dir: str | None = Field(None, description="folder for caches; default <first teacher>/soft-labels")


def cache_field() -> Any:
    return Field(None, description="soft-label cache (views, top_k, dir); unset: run the teacher every step")


class ModelConfig(Strict):
    """A model from the zoo: ``name`` like ``mlp:1200-1200``, ``resnet20``, ``timm:resnet18``."""

    name: str
    kwargs: dict[str, Any] = {}
    init: Literal["kaiming", "xavier", "default", "auto"] | None = Field(
        None, description="weight init of a model trained from scratch; unset: the family's own (auto for "
                          "mlp/cnn = kaiming without normalisation layers, else PyTorch's; the builder's for resnet, "
                          "bit, timm, torchvision)")

    @field_validator("kwargs")
    @classmethod
    def _plain(cls, v: dict[str, Any]) -> dict[str, Any]:
        _plain_data(v)
        return v


class OptimConfig(Strict):
    """Optimiser and learning-rate schedule."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], description="step schedule: fractions of training"
    )
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")


class TrainConfig(Strict):
    """How long and how to train one model."""

    epochs: int = Field(10, ge=1)
    optim: OptimConfig = OptimConfig()
    checkpoint_every: int | None = Field(
        None, ge=1, description="epochs between resume checkpoints; unset: by time (checkpoint_minutes) and after "
                                "the last epoch (a checkpoint every epoch wrote ~5.9 GB for the 9-run demo)")
    checkpoint_minutes: float = Field(10.0, gt=0, description="with checkpoint_every unset: minutes of training "
                                                               "between resume checkpoints")
    eval_every: int = Field(1, ge=1, description="epochs between validation passes (always after the last)")
    accumulate: int = Field(1, ge=1, description="gradient accumulation: batches per optimiser step")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast forward passes (student, teacher, connectors) to bfloat16 on CPU or "
        "GPU; weights, optimiser state and the losses' reductions stay fp32")
    channels_last: bool = Field(False, description="conv nets: NHWC memory layout for weights and inputs")
    sync_bn: bool = Field(False, description="under torchrun: synchronise BatchNorm statistics across processes")
    collapse: Literal["warn", "stop", "ignore"] = Field(
        "warn", description="accuracy still at chance after the first epochs (a diverged run): warn in one line "
                            "and mark the run, stop it with that error, or ignore it")


def find_all(cfg: BaseModel, cls: type[BaseModel]) -> list[Any]:
    """Every instance of ``cls`` inside a validated config (fields, lists, dict values), in order."""
    found: list[Any] = []
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        values = (
            value if isinstance(value, (list, tuple)) else list(value.values()) if isinstance(value, dict) else [value]
        )
        for v in values:
            if isinstance(v, cls):
                found.append(v)
            elif isinstance(v, BaseModel):
                found.extend(find_all(v, cls))
    return found


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {p} is not UTF-8 text (is it a YAML file?)") from None
    except RecursionError:
        raise UserError(f"config file {p} is nested too deeply") from None
    except OSError as e:
        raise UserError(f"config file {p} cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"config file {p} is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (``3``, ``0.1``, ``[1,2]``, ``true``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """Condense a pydantic error into one line naming the first offending field."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        from distillab.errors import did_you_mean

        key = str(first["loc"][-1])
        msg = "unknown key" + (
            f"; did you mean {ALIASES[key]}?" if key in ALIASES else did_you_mean(key, _config_keys())
        )
    extra = f" ({len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    got = ""
    if first["type"] != "extra_forbidden" and "input" in first and not isinstance(first["input"], dict):
        got = f" (got {first['input']!r})"
    return f"{source}: {loc + ': ' if loc else ''}{msg}{got}{extra}"


# Other libraries' names for keys that a spelling comparison would not find.
ALIASES = {"learning_rate": "lr", "num_epochs": "epochs", "max_epochs": "epochs", "n_epochs": "epochs",
           "optimizer": "optim", "scheduler": "schedule", "lr_schedule": "schedule", "clip_grad_norm": "grad_clip",
           "gradient_clip_val": "grad_clip", "T": "temperature", "bs": "batch_size", "dataset": "source"}


def _config_keys() -> list[str]:
    """Every key any config section accepts (the vocabulary of "did you mean")."""
    keys: list[str] = []
    todo: list[type] = [Strict]
    while todo:
        cls = todo.pop()
        keys.extend(getattr(cls, "model_fields", {}))
        todo.extend(cls.__subclasses__())
    return keys


def validate(model: type[BaseModel], data: dict[str, Any], source: str = "config") -> Any:
    """Validate ``data`` against ``model``; raise :class:`UserError` with a one-line message."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, source)) from None


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (what is saved in every run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
