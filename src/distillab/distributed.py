"""One run on several processes: DistributedDataParallel under ``torchrun`` (or SLURM's ``srun``
with torchrun's variables), NCCL on GPUs and gloo on CPU.

A small context, not a fork of the loop (nanoGPT's ``RANK`` / ``master_process`` pattern): the
trainer wraps the objective (student and connectors; the frozen teacher has no gradients to
synchronise) in DDP, the loader gives each rank its shard of every seeded global batch, and only
rank 0 writes files. ``torchrun --nproc-per-node N -m distillab run CONFIG`` with ``data.batch_size``
B trains with global batch B (B/N per rank), like one process with batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CURRENT = Dist()


def current() -> Dist:
    return _CURRENT


def init_from_env() -> Dist:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); a plain process stays rank 0 of 1."""
    global _CURRENT
    world = _env_int("WORLD_SIZE", "1", 1)
    if world <= 1 or _CURRENT.enabled:
        return _CURRENT
    import datetime

    import torch.distributed as dist

    from distillab.errors import UserError

    if "RANK" not in os.environ:
        raise UserError(f"WORLD_SIZE={world} but RANK is not set: start distributed runs with torchrun")
    rank = _env_int("RANK", "0", 0)
    if rank >= world:
        raise UserError(f"RANK={rank} is not below WORLD_SIZE={world}")
    local = _env_int("LOCAL_RANK", "0", 0)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(key):
            raise UserError(f"WORLD_SIZE={world} but {key} is not set: start distributed runs with torchrun")
    port = _env_int("MASTER_PORT", "0", 1)
    if port > 65535:
        raise UserError(f"MASTER_PORT={port} is not a TCP port")
    # Every wait on the other processes is bounded: a peer that never comes is an error, not a hang.
    timeout = _env_int("DISTILLAB_DIST_TIMEOUT", "600", 1)
    cuda = torch.cuda.is_available() and os.environ.get("DISTILLAB_DEVICE", "") != "cpu"
    if cuda:
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, TimeoutError, ValueError) as e:
        raise UserError(f"rank {rank}: the {world} processes of the job did not all join at "
                        f"{os.environ['MASTER_ADDR']}:{port} within {timeout} s (DISTILLAB_DIST_TIMEOUT) "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    _CURRENT = Dist(dist.get_rank(), dist.get_world_size(), local)
    return _CURRENT


def _env_int(key: str, default: str, minimum: int) -> int:
    """An integer environment variable, checked (one-line error naming it)."""
    from distillab.errors import UserError

    raw = os.environ.get(key, default)
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"environment variable {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise UserError(f"environment variable {key}={value} must be at least {minimum}")
    return value


def barrier() -> None:
    if _CURRENT.enabled:
        torch.distributed.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. an error message, so every rank stops together)."""
    if not _CURRENT.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each value (same keys on every rank)."""
    if not _CURRENT.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t)
    return {k: float(v) / _CURRENT.world for k, v in zip(keys, t.tolist(), strict=True)}
