"""torch.distributed, the few things probe training and pretraining both need (torch only).

A process learns its place from the environment torchrun, submitit and SLURM set (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). A single process needs no process group, and
every helper here is then the identity, so callers have one code path for one and many ranks.
The backend is nccl on CUDA, gloo otherwise (CPU runs and tests).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """WORLD_SIZE of the launcher's environment (1 without one); starts nothing."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the process group described by RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT.

    `device` None or "auto": cuda:LOCAL_RANK where CUDA exists, else the CPU. A CUDA device
    without an index gets LOCAL_RANK's, so every rank of a node drives its own GPU.
    """
    world = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device is None or str(device) == "auto":
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None or world > 1:
            device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch "
                             f"with torchrun (or `harness launch`), which sets them")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks, in place (itself when not distributed)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_mean(value: float, device: torch.device) -> float:
    """Mean of a python float over the ranks (the value itself when not distributed)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def all_true(flag: bool, device: torch.device) -> bool:
    """True when `flag` holds on every rank (so all ranks take the same branch)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank; [obj] when not distributed."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(items: list, rank: int, world: int) -> list:
    """Every `world`-th item from `rank`: each rank an exact share, nothing padded or repeated
    (unlike `DistributedSampler`, which pads with duplicates to equal lengths)."""
    return items[rank::world]


def unshard(parts: list[list], total: int) -> list:
    """Inverse of `shard`: the per-rank lists back in the original order."""
    out = [None] * total
    world = len(parts)
    for r, part in enumerate(parts):
        out[r::world] = part
    return out
