"""Named data sources, loaded whole into memory as uint8 tensors.

``load_source("fashion-mnist")`` returns a :class:`Dataset` with ``x_train``/``x_test`` of shape
(N, C, H, W), dtype uint8, and int64 labels. Files are located via an explicit ``data_dir``,
then ``$DISTILLAB_DATA``, then standard places (Debian's ``/usr/share/datasets``, ``~/.cache``,
``./data``); when nothing is found and the user is online, torchvision downloads the data.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distillab.errors import UserError

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
                raise UserError(f"data {self.name}: {split} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
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


SOURCES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "digits", "imagefolder:PATH", "webdataset:PATH")


def load_source(name: str, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
                channels: int | None = None) -> Dataset:
    """Load a named dataset into memory. ``name`` is one of :data:`SOURCES`; ``image_size`` and
    ``channels`` convert an image folder's images (default: as they are)."""
    if name == "fashion-mnist":
        return _load_idx_family(name, "FashionMNIST", "dataset-fashion-mnist", FASHION_CLASSES, data_dir)
    if name == "mnist":
        return _load_idx_family(name, "MNIST", None, [str(i) for i in range(10)], data_dir)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, data_dir)
    if name == "digits":
        return _load_digits()
    if name.startswith("imagefolder:"):
        return _load_imagefolder(name.split(":", 1)[1], image_size, channels)
    if name.startswith("webdataset:"):
        raise UserError(f"data.source {name!r} is streamed from disk, not loaded into memory")
    from distillab.errors import did_you_mean

    family, sep, rest = name.partition(":")
    close = did_you_mean(family, ["imagefolder", "webdataset"]) if sep else ""
    hint = close.replace("?", "").split(" or ")[0] + f":{rest}?" if close else did_you_mean(name, SOURCES)
    raise UserError(f"data.source: unknown source {name!r}{hint} (known: {', '.join(SOURCES)})")
