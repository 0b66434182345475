"""Image folders read defensively: what ``torchvision``'s ``ImageFolder`` lists, without its traps.

``ImageFolder`` follows symlinks without remembering where it has been (a link to a parent
folder serves every image dozens of times), opens a FIFO named ``x.png`` (and waits forever), and
Pillow's ``convert("RGB")`` clips 16-bit greyscale to white. Here each real folder is walked once,
only regular files are read, 16-bit images are scaled to 8 bits, and an image of more pixels than
:data:`MAX_PIXELS` (a decompression bomb) is an error naming the file.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distillab.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

MAX_PIXELS = 64 * 1024 * 1024  # 8k x 8k: far above any dataset image, far below a bomb


def list_images(folder: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, class index)`` of every image under ``folder/<class>/``, and the class names, in
    ``ImageFolder``'s order (sorted classes, sorted walk, sorted names; same extensions); each real
    folder is visited once, however many symlinks lead to it."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not folder.is_dir():
        raise UserError(f"data imagefolder: {folder} is not a directory")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise UserError(f"data imagefolder: {folder} holds no class folders")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        top = folder / name
        seen = {os.path.realpath(top)}
        found: list[tuple[str, list[str]]] = []
        for root, dirs, files in os.walk(top, followlinks=True):
            keep = []
            for d in sorted(dirs):
                real = os.path.realpath(os.path.join(root, d))
                if real not in seen:  # a symlink loop, or a second link to a folder already read
                    seen.add(real)
                    keep.append(d)
            dirs[:] = keep
            found.append((root, files))
        before = len(samples)
        for root, files in sorted(found):
            samples += [(os.path.join(root, f), label) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
        if len(samples) == before:
            raise UserError(f"data imagefolder: class folder {top} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return samples, classes


def to_8bit(im: "Image.Image") -> "Image.Image":
    """A 16-bit greyscale image (values 0..65535, which ``convert("RGB")`` clips at 255: white) scaled
    to 8 bits; any other image unchanged."""
    from PIL import Image

    if im.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return im
    arr = np.asarray(im, dtype=np.float64) / 257.0
    return Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), mode="L")


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N")  # one channel of values (+ alpha)


def _open_checked(path: str | Path) -> "Image.Image":
    """``Image.open`` of a regular file, refusing FIFOs, decompression bombs and float pixels."""
    from PIL import Image

    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"data imagefolder: cannot read image {path} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        raise UserError(f"data imagefolder: {path} is not a regular file")
    im = Image.open(path)
    if im.width * im.height > MAX_PIXELS:
        im.close()
        raise UserError(f"data imagefolder: image {path} has {im.width}x{im.height} pixels (more than "
                        f"{MAX_PIXELS:,}; a decompression bomb?)")
    if im.mode == "F":
        im.close()
        raise UserError(f"data imagefolder: image {path} holds floating-point pixels; save it as 8- or 16-bit")
    return im


def _read_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    return (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError,
            Image.DecompressionBombWarning)


def image_format(folders: list[tuple[Path, list[tuple[str, int]]]], size: int | None,
                 channels: int | None) -> tuple[int, int]:
    """``(channels, side)`` an image folder is read as: the given ones, else the images' own — 1
    channel when every image is greyscale (3 as soon as one is colour), and their side length when
    they all share one square size. Only the headers are read. Images of several sizes (or not
    square) without ``size`` are a one-line error: which size to bring them to is the user's choice."""
    from PIL import Image

    if size is not None and channels is not None:
        return channels, size
    grey, sizes = True, {}
    for _, samples in folders:
        for path, _ in samples:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with _open_checked(path) as im:
                        grey = grey and im.mode in GREY_MODES
                        sizes.setdefault(im.size, path)
            except UserError:
                raise
            except _read_errors() as e:
                raise UserError(f"data imagefolder: cannot read image {path} ({type(e).__name__})") from None
    if size is None:
        (w, h), first = next(iter(sizes.items()))
        if len(sizes) > 1 or w != h:
            (w2, h2), other = list(sizes.items())[-1]
            what = (f"images of several sizes ({w}x{h} {first}, {w2}x{h2} {other})" if len(sizes) > 1
                    else f"{w}x{h} images, not square ({first})")
            raise UserError(f"data imagefolder: {folders[0][0].parent} holds {what}; set data.image_size (`data pack "
                            f"--image-size`) to the side length to resize them to")
        size = w
    return (channels or (1 if grey else 3)), size


def to_array(im: "Image.Image", size: int, channels: int) -> np.ndarray:
    """An opened image as ``(size, size, channels)`` uint8: 16-bit greyscale scaled to 8 bits (not
    clipped), converted to L or RGB, resized (bilinear) only when its size differs. The in-memory
    ``imagefolder:`` loader and the streamed one both decode through here, so both train on the
    same tensors."""
    from PIL import Image

    im = to_8bit(im)
    mode = "RGB" if channels == 3 else "L"
    if im.mode != mode:  # convert() copies even when the mode is already right (a third of a tiny decode)
        im = im.convert(mode)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    # tobytes + frombuffer: ~35 % faster than np.array(im) per tiny image; bytearray: writable
    return np.frombuffer(bytearray(im.tobytes()), np.uint8).reshape(size, size, channels)


def read_image(path: str | Path, size: int, channels: int = 3) -> np.ndarray:
    """The image at ``path`` as ``(size, size, channels)`` uint8 (see :func:`to_array`). Anything
    unreadable is a one-line error naming the file."""
    return read_image_sized(path, size, channels)[0]


def read_image_sized(path: str | Path, size: int, channels: int = 3) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_image` and the image's own (width, height): ``data pack`` keeps a file's bytes
    when it was not resized."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_checked(path) as im:
                return to_array(im, size, channels), im.size
    except UserError:
        raise
    except _read_errors() as e:
        raise UserError(f"data imagefolder: cannot read image {path} ({type(e).__name__})") from None
