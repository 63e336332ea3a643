"""Distributed helpers that degrade to one process: without torchrun, rank 0 of world size 1."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist



def init(backend: str | None = None) -> None:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    if "RANK" not in os.environ or dist.is_available() and dist.is_initialized():
        return
    if backend is None:
        # With a GPU, CUDA tensors go through NCCL and CPU tensors (objects, --device cpu) through
        # gloo; without one, gloo does everything.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if "nccl" in backend:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    # Before init() under torchrun, the launcher's RANK (so only rank 0 prints the config).
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's value on every rank (e.g. a resume decision)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when `flag` is true on every rank: decisions that change which collectives run next
    (skip a non-finite step, stop on a time budget) must be the same everywhere, or DDP hangs."""
    if not is_initialized():
        return bool(flag)
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()
