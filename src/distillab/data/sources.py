"""Named data sources, loaded whole into memory as uint8 tensors.

``load_source("fashion-mnist")`` returns a :class:`Dataset` with ``x_train``/``x_test`` of shape
(N, C, H, W), dtype uint8, and int64 labels. Files are located via an explicit ``data_dir``,
then ``$DISTILLAB_DATA``, then standard places (Debian's ``/usr/share/datasets``, ``~/.cache``,
``./data``); when nothing is found and the user is online, torchvision downloads the data.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from distillab.errors import UserError
from distillab.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# Places searched after --data-dir and $DISTILLAB_DATA; a list so tests can replace it.
STANDARD_DIRS: list[Path] = [
    Path("/usr/share/datasets"),
    Path.home() / ".cache" / "distillab",
    Path("data"),
]


@dataclass(frozen=True)
class SourceEntry:
    """A registered data source. ``load(data_dir=, image_size=[, path=][, channels=])`` returns a :class:`Dataset`
    held in memory; a streamed kind has ``load=None`` and ``stream(cfg, seed, order_seed,
    normalization, device)`` → DataBundle plus ``describe(path)`` → (shape, num_classes) read from
    metadata alone (preflight). ``takes_path``: written ``name:PATH`` in a config."""

    name: str
    load: Callable[..., Dataset] | None
    takes_path: bool
    help: str
    stream: Callable[..., Any] | None = None
    describe: Callable[[str], tuple[tuple[int, ...], int]] | None = None

    @property
    def shape(self) -> str:
        """How a config names it: ``digits``, ``imagefolder:PATH``."""
        return f"{self.name}:PATH" if self.takes_path else self.name


SOURCES: Registry[SourceEntry] = Registry("source", "; `distillab list sources` describes them")


def register_source(name: str, *, takes_path: bool = False, help: str = "",
                    stream: Callable[..., Any] | None = None,
                    describe: Callable[[str], tuple[tuple[int, ...], int]] | None = None) -> Callable[[F], F]:
    """Register a data source under ``name`` (usable as ``data.source: name`` in any config).

    >>> @register_source("my-data")                           # doctest: +SKIP
    ... def my_data(data_dir=None, image_size=None, **_):
    ...     return Dataset("my-data", x_train, y_train, x_test, y_test, classes)

    The decorated function gets ``data_dir`` and ``image_size`` (``data.image_size``: None unless a
    config sets it, i.e. the data's own size), and ``path`` with ``takes_path`` (``name:PATH``);
    ``channels`` is passed only when set (``data.channels``, image folders only). The first line of
    its docstring is the help ``distillab list sources`` prints.
    A streamed kind (``stream=``, ``describe=``) may decorate ``None``'s stand-in, a function
    that is never called to load into memory."""
    if not name or ":" in name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"source name {name!r}: use letters, digits, '_', '.', '-'")

    def deco(fn: F) -> F:
        text = help or (fn.__doc__ or "").strip().split("\n")[0]
        SOURCES.add(name, SourceEntry(name, None if stream is not None else fn, takes_path or stream is not None,
                                      text, stream, describe), fn.__module__)
        return fn

    return deco


def resolve_source(name: object) -> tuple[SourceEntry, str | None]:
    """The registry entry of a ``data.source`` value and its ``PATH`` part (None without one)."""
    if not isinstance(name, str):
        raise UserError(f"data.source: {name!r} is not a source name")
    family, sep, rest = name.partition(":")
    entry = SOURCES.get(family)
    if entry is not None and entry.takes_path == bool(sep):
        return entry, rest if sep else None
    from distillab.errors import did_you_mean

    shapes = [e.shape for e in SOURCES.values()]
    close = did_you_mean(family, [e.name for e in SOURCES.values() if e.takes_path]) if sep else ""
    hint = close.replace("?", "").split(" or ")[0] + f":{rest}?" if close else did_you_mean(name, shapes)
    raise UserError(f"data.source: unknown source {name!r}{hint} (known: {', '.join(shapes)})")


@dataclass
class Dataset:
    """A whole labelled dataset in memory (uint8 images, int64 labels)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def check(self) -> "Dataset":
        """Reject data a model would silently mis-train on (labels out of range, bad dtype)."""
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.ndim != 4:
                raise UserError(
                    f"data {self.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
                )
            if len(x) != len(y):
                raise UserError(f"data {self.name}: {split} has {len(x)} images but {len(y)} labels")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise UserError(
                    f"data {self.name}: {split} labels out of range [0, {self.num_classes - 1}] "
                    f"(found {int(y.min())}..{int(y.max())})")
        return self


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for data, in order. An explicit ``data_dir`` is the only place
    searched: a run never falls back from the folder a user named to data found elsewhere."""
    dirs: list[Path] = []
    if data_dir:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            raise UserError(f"--data-dir / data.data_dir {d} does not exist or is not a folder")
        return [d]
    if os.environ.get("DISTILLAB_DATA"):
        dirs.append(Path(os.environ["DISTILLAB_DATA"]).expanduser())
    dirs.extend(STANDARD_DIRS)
    return dirs


def _download_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("DISTILLAB_DATA"):
        return Path(os.environ["DISTILLAB_DATA"]).expanduser()
    return Path.home() / ".cache" / "distillab"


def _downloads_allowed() -> bool:
    return os.environ.get("DISTILLAB_NO_DOWNLOAD", "") in ("", "0")


def _missing(name: str, dirs: list[Path], hint: str) -> UserError:
    where = ", ".join(str(d) for d in dirs)
    return UserError(
        f"data {name!r} not found (searched {where}) and it could not be downloaded; {hint}, "
        f"or pass --data-dir DIR or set DISTILLAB_DATA=DIR to a folder that holds it")


# ---------------------------------------------------------------- MNIST-format (IDX) files
def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (MNIST format), gzipped or not, into a tensor.

    Our own reader because torchvision's opens only uncompressed files, while Debian's
    dataset-fashion-mnist ships them gzipped (torchvision still does the downloading).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
            raise ValueError("bad magic number")
        ndim = data[3]
        dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        if arr.size != int(np.prod(dims)):
            raise ValueError(f"expected {int(np.prod(dims))} values, found {arr.size}")
    except (OSError, EOFError, ValueError) as e:
        raise UserError(f"data file {path} is not a valid IDX file ({e})") from None
    return torch.from_numpy(arr.copy()).view(*dims)


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx_dir(dirs: list[Path], subdirs: list[str]) -> Path | None:
    for d in dirs:
        for sub in ["", *subdirs]:
            cand = d / sub if sub else d
            if all((cand / f).exists() or (cand / (f + ".gz")).exists() for f in _IDX_FILES):
                return cand
    return None


def _load_idx_family(name: str, tv_name: str, debian_pkg: str | None,
                     classes: list[str], data_dir) -> Dataset:
    dirs = search_dirs(data_dir)
    # Debian installs to /usr/share/datasets/<name>; torchvision uses <root>/<Class>/raw.
    found = _find_idx_dir(dirs, [name, f"{tv_name}/raw"])
    if found is None and _downloads_allowed():
        root = _download_dir(data_dir)
        try:
            import torchvision.datasets as tvd
            getattr(tvd, tv_name)(str(root), train=True, download=True)
            getattr(tvd, tv_name)(str(root), train=False, download=True)
            found = _find_idx_dir([root], [f"{tv_name}/raw"])
        except Exception:  # no network, no permission: report below with instructions
            found = None
    if found is None:
        hint = (f"install it with 'apt-get install -y {debian_pkg}' (files go to /usr/share/datasets/{name})"
                if debian_pkg else "download it once while online")
        raise _missing(name, dirs, hint)

    def get(stem: str) -> torch.Tensor:
        p = found / stem
        return read_idx(p if p.exists() else found / (stem + ".gz"))

    xtr, ytr, xte, yte = (get(f) for f in _IDX_FILES)
    _check_identity(name, found, yte)
    return Dataset(name, xtr.unsqueeze(1), ytr.long(), xte.unsqueeze(1), yte.long(), classes).check()


# SHA-256 of Fashion-MNIST's test labels (the 10,000 uint8 values): IDX files carry no dataset name,
# and MNIST's files have the same names, shapes and label range.
FASHION_TEST_LABELS_SHA256 = "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"


def _labels_digest(y: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(y.to(torch.uint8).numpy().tobytes()).hexdigest()


def _check_identity(name: str, folder: Path, y_test: torch.Tensor) -> None:
    """Refuse MNIST files named as Fashion-MNIST and the reverse. Official-size test sets (10,000
    labels) are checked against Fashion-MNIST's digest; other sizes are a user's own IDX data."""
    if len(y_test) != 10_000:
        return
    is_fashion = _labels_digest(y_test) == FASHION_TEST_LABELS_SHA256
    if name == "fashion-mnist" and not is_fashion:
        raise UserError(f"the IDX files in {folder} are not Fashion-MNIST (their test labels differ from the "
                        f"official ones; MNIST digits have the same file names): use source: mnist, or point "
                        f"--data-dir at Fashion-MNIST")
    if name == "mnist" and is_fashion:
        raise UserError(f"the IDX files in {folder} are Fashion-MNIST, not MNIST: use source: fashion-mnist")


# ---------------------------------------------------------------- CIFAR
def _load_cifar(name: str, data_dir) -> Dataset:
    import torchvision.datasets as tvd

    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    dirs = search_dirs(data_dir)
    candidates = [d / sub for d in dirs for sub in ("", "cifar")]
    for root in candidates:
        try:
            tr, te = cls(str(root), train=True), cls(str(root), train=False)
            break
        except (RuntimeError, OSError):
            continue
    else:
        tr = te = None
        if _downloads_allowed():
            try:
                root = _download_dir(data_dir)
                tr, te = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
            except Exception:
                tr = te = None
        if tr is None:
            raise _missing(name, dirs, f"download {cls.url} and unpack it")

    def conv(ds) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.long)

    xtr, ytr = conv(tr)
    xte, yte = conv(te)
    return Dataset(name, xtr, ytr, xte, yte, list(tr.classes)).check()


# ---------------------------------------------------------------- scikit-learn digits
def _load_digits(test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), with a fixed seeded test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images * 16).clip(0, 255).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = int(len(x) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return Dataset("digits", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)]).check()


# ---------------------------------------------------------------- image folders
def _load_imagefolder(path: str, image_size: int | None = None, channels: int | None = None) -> Dataset:
    """``PATH/train/<class>/*`` and ``PATH/{val,test}/<class>/*`` at their own size and channels (grey
    stays grey), or resized to ``image_size`` / converted to ``channels`` when given."""
    from distillab.data.images import image_format, list_images, read_image

    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"data imagefolder: {root} is not a directory")
    train_dir = root / "train"
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise UserError(f"data imagefolder: {root} needs train/ and test/ (or val/) subfolders of class folders")
    train, classes = list_images(train_dir)  # symlink loops, FIFOs, 16-bit images and bombs handled
    test, found = list_images(test_dir)
    if found != classes:
        raise UserError(f"data imagefolder: class folders of {test_dir} differ from those of {train_dir}")
    c, size = image_format([(train_dir, train), (test_dir, test)], image_size, channels)

    def load(samples: list[tuple[str, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        xs = np.empty((len(samples), size, size, c), dtype=np.uint8)
        for i, (p, _) in enumerate(samples):
            xs[i] = read_image(p, size, c)
        return torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous(), torch.tensor([t for _, t in samples])

    xtr, ytr = load(train)
    xte, yte = load(test)
    return Dataset(f"imagefolder:{root.name}", xtr, ytr, xte, yte, classes).check()


def _fashion_mnist(data_dir: str | os.PathLike | None = None, **_: object) -> Dataset:
    """70k 28x28 grey clothing images, 10 classes (Debian: dataset-fashion-mnist)"""
    return _load_idx_family("fashion-mnist", "FashionMNIST", "dataset-fashion-mnist", FASHION_CLASSES, data_dir)


def _mnist(data_dir: str | os.PathLike | None = None, **_: object) -> Dataset:
    """70k 28x28 grey digits, 10 classes"""
    return _load_idx_family("mnist", "MNIST", None, [str(i) for i in range(10)], data_dir)


def _cifar10(data_dir: str | os.PathLike | None = None, **_: object) -> Dataset:
    """60k 32x32 colour images, 10 classes"""
    return _load_cifar("cifar10", data_dir)


def _cifar100(data_dir: str | os.PathLike | None = None, **_: object) -> Dataset:
    """60k 32x32 colour images, 100 classes"""
    return _load_cifar("cifar100", data_dir)


def _digits(**_: object) -> Dataset:
    """scikit-learn's bundled 1,797 8x8 digits (always available; used by the tests)"""
    return _load_digits()


def _imagefolder(path: str, image_size: int | None = None, channels: int | None = None, **_: object) -> Dataset:
    """PATH/train/<class>/*.png|jpg and PATH/test/<class>/…, at their own size and channels"""
    return _load_imagefolder(path, image_size, channels)


# The built-in in-memory sources (registered here: their loaders are the functions above).
for _name, _fn in (("fashion-mnist", _fashion_mnist), ("mnist", _mnist), ("cifar10", _cifar10),
                   ("cifar100", _cifar100), ("digits", _digits)):
    register_source(_name)(_fn)
register_source("imagefolder", takes_path=True,
                help="PATH/train/<class>/*.png|jpg and PATH/test/<class>/…, at their own size and channels "
                     "(data.image_size / data.channels convert them)")(_imagefolder)


def load_source(name: str, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
                channels: int | None = None) -> Dataset:
    """Load a named dataset into memory. ``name`` is a registered source (:data:`SOURCES`), with
    ``:PATH`` for kinds that take one (``imagefolder:PATH``); ``image_size`` and ``channels``
    convert an image folder's images (default: as they are)."""
    entry, arg = resolve_source(name)
    if entry.load is None:
        raise UserError(f"data.source {name!r} is streamed from disk, not loaded into memory")
    kwargs: dict[str, Any] = {"path": arg} if entry.takes_path else {}
    if channels is not None:  # only image folders take it (DataConfig refuses it elsewhere)
        kwargs["channels"] = channels
    ds = entry.load(data_dir=data_dir, image_size=image_size, **kwargs)
    if not isinstance(ds, Dataset):
        raise UserError(f"data.source {name!r}: its loader returned {type(ds).__name__}, not a distillab Dataset")
    return ds.check()
