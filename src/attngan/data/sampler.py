"""The training order of an indexable data set: a seeded permutation per epoch, sharded by rank."""

from __future__ import annotations

import torch


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
