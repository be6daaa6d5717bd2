"""torch.distributed helpers: training and evaluation run unchanged on one process or under torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Whether this process writes the run's files: rank 0 under torchrun (RANK), or a lone process.
    Read from the environment, so it holds before the process group is joined."""
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a count tensor over processes (class-wise counts: their sum equals the one-process count)."""
    if info.enabled:
        dev = t.device
        # gloo reduces CPU tensors; nccl needs CUDA ones
        work = t.to(torch.device("cuda", info.local_rank)) if dist.get_backend() == "nccl" else t.cpu()
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        t = work.to(dev)
    return t


def broadcast_object(obj: object, info: DistInfo) -> object:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: object, info: DistInfo) -> list[object]:
    """Every process's ``obj``, in rank order (our own processes' results; pickled by torch.distributed)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo | None = None) -> None:
    """Wait for every process, then leave the process group (a no-op without one). ``info=None``: whatever
    group this process joined. A process that exits with the group still up can abort in gloo's threads
    ("terminate called without an active exception")."""
    if (info is None or info.enabled) and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
