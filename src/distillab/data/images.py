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


def read_image(path: str | Path, size: int) -> np.ndarray:
    """The image at ``path`` as ``(size, size, 3)`` uint8 RGB (bilinear resize); 16-bit greyscale is
    scaled to 8 bits, not clipped. Anything unreadable is a one-line error naming the file."""
    from PIL import Image

    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"data imagefolder: cannot read image {path} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
        raise UserError(f"data imagefolder: {path} is not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise UserError(f"data imagefolder: image {path} has {im.width}x{im.height} pixels (more than "
                                    f"{MAX_PIXELS:,}; a decompression bomb?)")
                if im.mode == "F":
                    raise UserError(f"data imagefolder: image {path} holds floating-point pixels; save it as 8- or "
                                    f"16-bit")
                return np.asarray(to_8bit(im).convert("RGB").resize((size, size), Image.BILINEAR))
    except UserError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise UserError(f"data imagefolder: cannot read image {path} ({type(e).__name__})") from None
