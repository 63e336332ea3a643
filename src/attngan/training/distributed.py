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


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", get_local_rank())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        from attngan.errors import AttnGANError

        raise AttnGANError(f"unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        from attngan.errors import AttnGANError

        raise AttnGANError("--device cuda was asked for but no CUDA GPU is available")
    return device


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch, sharded by rank, that can start mid-epoch (exact resume).

    With in-process loading (workers=0) it also reseeds the dataset's crop/flip/caption stream at
    every batch from (seed, epoch, batch), so a resumed run replays the same items exactly.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, dataset=None):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.dataset = dataset
        self.epoch, self.start_batch = 0, 0
        self.per_rank = (n // world // batch_size) * batch_size  # drop_last, equal on every rank

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[self.rank::self.world][: self.per_rank].tolist()
        for j in range(self.start_batch * self.batch_size, len(perm)):
            if j % self.batch_size == 0 and self.dataset is not None and hasattr(self.dataset, "reseed"):
                self.dataset.reseed((self.seed * 1_000_003 + self.epoch) * 100_003 + j // self.batch_size
                                    + self.rank * 7_919)
            yield perm[j]

    def __len__(self) -> int:
        return self.per_rank - self.start_batch * self.batch_size
