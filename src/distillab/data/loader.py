"""An in-memory batch loader whose augmentation runs on the whole batch at once.

Images stay uint8 on the target device; each batch is gathered, converted to float, augmented
with per-sample random parameters (translation, padded crop, flip) by tensor indexing, and
normalised. All randomness comes from a generator seeded by ``(seed, epoch)``, so an epoch is
reproducible on its own — which is what makes ``--resume`` identical to an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from distillab.config import AugmentConfig
from distillab.data.batch import Batch


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, stable seed for each (seed, epoch, stream) triple."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


_M32 = 0xFFFF_FFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32-style) of int64 tensors holding values in [0, 2^32); the
    products stay below 2^60, so int64 arithmetic never overflows."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


class KeyedRandom:
    """Per-example random numbers that are a pure function of (seed, example index, view, draw
    number): the parameters of an augmented view can be rebuilt for any one example without
    replaying a generator over the whole epoch (the soft-label cache stores a teacher's outputs per
    (example, view) and later rebuilds exactly that crop). Used where the augmentations take a
    ``torch.Generator``."""

    def __init__(self, seed: int, index: torch.Tensor, view: torch.Tensor) -> None:
        base = _hash32(torch.full_like(index, seed & _M32, dtype=torch.int64))
        self._key = _hash32(base ^ _hash32((index.long() & _M32) ^ _hash32(view.long() & _M32)))
        self._draw = 0

    def rand(self, n: int) -> torch.Tensor:
        """One uniform float in [0, 1) per example (``n`` must be the batch size)."""
        if n != len(self._key):
            raise ValueError(f"KeyedRandom holds {len(self._key)} examples, asked for {n}")
        self._draw += 1
        h = _hash32(self._key ^ _hash32(torch.full_like(self._key, self._draw)))
        return h.double().div(2.0**32).float().cpu()


def _rand(rng: torch.Generator | KeyedRandom, n: int) -> torch.Tensor:
    return rng.rand(n) if isinstance(rng, KeyedRandom) else torch.rand(n, generator=rng)


def _randint(rng: torch.Generator | KeyedRandom, high: int, n: int) -> torch.Tensor:
    if isinstance(rng, KeyedRandom):
        return (rng.rand(n) * high).long().clamp_max(high - 1)
    return torch.randint(0, high, (n,), generator=rng)


def _uniform(rng: torch.Generator | KeyedRandom, lo: float, hi: float, n: int) -> torch.Tensor:
    if isinstance(rng, KeyedRandom):
        return lo + (hi - lo) * rng.rand(n)
    return torch.empty(n).uniform_(lo, hi, generator=rng)


def normalizer(mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_uint8 * scale − shift = (x / 255 − mean) / std, per channel."""
    return (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device), (mean / std).view(1, -1, 1, 1).to(device)


def random_crop_batch(x: torch.Tensor, size: int, gen: torch.Generator | KeyedRandom) -> torch.Tensor:
    """A random ``size`` x ``size`` window of each image: one gather for the whole batch (4x faster
    on CPU than 4-tensor advanced indexing)."""
    b, c, h, w = x.shape
    oy = _randint(gen, h - size + 1, b).to(x.device)
    ox = _randint(gen, w - size + 1, b).to(x.device)
    grid = (torch.arange(size, device=x.device)[:, None] * w + torch.arange(size, device=x.device)).flatten()
    idx = (oy * w + ox)[:, None] + grid
    return x.reshape(b, c, -1).gather(2, idx[:, None, :].expand(b, c, size * size)).view(b, c, size, size)


def center_crop_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def shift_batch(x: torch.Tensor, max_shift: int, gen: torch.Generator | KeyedRandom,
                mode: str = "constant", fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift].

    Pad-then-crop: ``mode="constant"`` fills the uncovered border with ``fill`` (Hinton's jitter;
    a per-channel ``(1, C, 1, 1)`` tensor for normalised images, so that the border is the raw
    image's black, not the normalised 0 — a grey the test images never contain); ``"reflect"`` gives
    the usual padded random crop. Square images only.
    """
    if max_shift <= 0:
        return x
    k = max_shift
    if mode == "constant" and isinstance(fill, torch.Tensor):
        b, c, h, w = x.shape
        padded = fill.to(x.device, x.dtype).expand(b, c, h + 2 * k, w + 2 * k).clone()
        padded[..., k:k + h, k:k + w] = x
    else:
        padded = F.pad(x, (k, k, k, k), mode=mode, **({"value": float(fill)} if mode == "constant" else {}))
    return random_crop_batch(padded, x.shape[-1], gen)


def flip_batch(x: torch.Tensor, gen: torch.Generator | KeyedRandom) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    mask = (_rand(gen, x.shape[0]) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def resized_crop_batch(x: torch.Tensor, scale: tuple[float, float], gen: torch.Generator | KeyedRandom,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per-sample random-resized crop (area fraction in ``scale``, aspect in ``ratio``), resized
    back to the input size with bilinear sampling — one ``grid_sample`` for the whole batch."""
    b = x.shape[0]
    area = _uniform(gen, scale[0], scale[1], b)
    log_r = _uniform(gen, math.log(ratio[0]), math.log(ratio[1]), b)
    aspect = log_r.exp()
    w = (area * aspect).sqrt().clamp(max=1.0)  # crop width / image width
    h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (_rand(gen, b) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
    cy = (_rand(gen, b) * 2 - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(x: torch.Tensor, aug: AugmentConfig, gen: torch.Generator | KeyedRandom,
                  fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Apply the configured augmentations to a float batch (random parameters from ``gen``).
    ``fill``: what the border of a shifted image shows — for a normalised batch, the normalised
    value of black (``-shift`` of :func:`normalizer`), as padding raw images with 0 would give."""
    if aug.resized_crop is not None:
        x = resized_crop_batch(x, aug.resized_crop, gen)
    if aug.jitter:
        x = shift_batch(x, aug.jitter, gen, "constant", fill)
    if aug.crop_padding:
        mode = "reflect" if aug.crop_padding < min(x.shape[-2:]) else "constant"
        x = shift_batch(x, aug.crop_padding, gen, mode, fill)
    if aug.crop is not None:
        x = random_crop_batch(x, aug.crop, gen)
    if aug.hflip:
        x = flip_batch(x, gen)
    return x


class BatchLoader:
    """Serve :class:`Batch` records (x, y, index) from uint8 images held in memory.

    Args:
        x: uint8 images (N, C, H, W); moved to ``device`` once.
        y: int64 labels (N,).
        mean, std: per-channel statistics (0..1 scale) used to normalise.
        augment: augmentation applied to training batches; None for evaluation.
        shuffle: new seeded order every epoch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, mean: torch.Tensor,
                 std: torch.Tensor, augment: AugmentConfig | None = None, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, device: torch.device | str = "cpu",
                 center_crop: int | None = None, shard: tuple[int, int] = (0, 1),
                 steps_per_epoch: int | None = None) -> None:
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        # Evaluation counterpart of a training random crop: the centre window of the same size.
        self.center_crop = center_crop
        # (rank, world) under DDP: each rank keeps every world-th example of each *global* batch,
        # gathered and augmented whole first, so N ranks see exactly one process's batches.
        self.shard = shard
        # Fixed-length epochs of full batches cut from consecutive seeded permutations (training
        # by steps, as BiT): examples repeat within a batch when the set is smaller than it.
        self.steps_per_epoch = steps_per_epoch
        self.views: int | None = None  # set by use_views (soft-label cache)
        self.view_seed = 0
        self._scale, self._shift = normalizer(mean, std, self.device)

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def use_views(self, views: int, view_seed: int) -> None:
        """Train on ``views`` fixed augmented views per example: each epoch picks one view per
        example (seeded by (seed, epoch)), and that view's augmentation parameters are a function
        of (``view_seed``, index, view) alone — the crop a soft-label cache stored labels for.
        Batches carry the view in ``extra["view"]``."""
        self.views, self.view_seed = views, view_seed

    def view_batch(self, index: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """The normalised, augmented images of examples ``index`` in views ``view`` (what the
        training loop serves for them; the cache builder runs the teacher on exactly these)."""
        xb = self.x[index].float() * self._scale - self._shift
        if self.augment is not None:
            xb = augment_batch(xb, self.augment, KeyedRandom(self.view_seed, index, view), -self._shift)
        return xb

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        n = len(self.y)
        # A shuffled (training) epoch never ends on a batch of one: BatchNorm cannot train on it.
        drop = self.drop_last or (self.shuffle and n > self.batch_size and n % self.batch_size == 1)
        return n // self.batch_size if drop else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        n = len(self.y)
        if self.steps_per_epoch is not None:
            need = self.steps_per_epoch * self.batch_size
            order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))]).to(self.device)
        else:
            order = (
                torch.randperm(n, generator=gen).to(self.device)
                if self.shuffle
                else torch.arange(n, device=self.device)
            )
        views = None
        if self.views is not None:
            pick = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=3))
            views = torch.randint(0, self.views, (n,), generator=pick).to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            extra = {}
            if views is not None:
                extra["view"] = views[idx]
                xb = self.view_batch(idx, extra["view"])
            else:
                xb = self.x[idx].float() * self._scale - self._shift
                if self.augment is not None:
                    xb = augment_batch(xb, self.augment, gen, -self._shift)
                elif self.center_crop is not None:
                    xb = center_crop_batch(xb, self.center_crop)
            if self.shard[1] > 1:
                r, w = self.shard
                xb, idx = xb[r::w], idx[r::w]
                extra = {k: v[r::w] for k, v in extra.items()}
            yield Batch(xb, self.y[idx], idx, extra)
