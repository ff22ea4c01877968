"""Deterministic, resumable, rank-aware batches.

Every process walks the same seeded permutation of the dataset (a new one each epoch) and
takes its own slice of each global batch, so the data order depends only on the seed and
the step: a resumed run, or a run on a different number of processes, sees the same images.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from vaegan.errors import InputError


class GlobalBatchSampler:
    """Yields this rank's indices for global batches ``start_batch, start_batch + 1, ...``."""

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_batch: int = 0):
        if global_batch % world_size:
            raise InputError(f"global batch {global_batch} is not divisible by {world_size} processes")
        if num_items < global_batch:
            raise InputError(f"dataset has {num_items} images, fewer than one batch of {global_batch}")
        self.num_items, self.global_batch = num_items, global_batch
        self.rank, self.local_batch = rank, global_batch // world_size
        self.seed, self.start_batch = seed, start_batch
        self.batches_per_epoch = num_items // global_batch
        self._epoch, self._perm = -1, None

    def indices(self, batch: int) -> list[int]:
        epoch, i = divmod(batch, self.batches_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_items, generator=gen)
        start = i * self.global_batch + self.rank * self.local_batch
        return self._perm[start : start + self.local_batch].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        while True:
            yield self.indices(batch)
            batch += 1


def _stack(items: list) -> torch.Tensor:
    return torch.stack(items)


def batches(dataset: Dataset, sampler: GlobalBatchSampler, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """Endless uint8 batches (B, 3, R, R) in the sampler's order.

    Datasets with a ``get_batch(indices)`` method (the prepared uint8 cache) are read
    directly, which beats a DataLoader's per-item collation by a wide margin.
    """
    if hasattr(dataset, "get_batch"):
        for idx in sampler:
            yield dataset.get_batch(idx)
        return
    # Its own generator: creating the iterator then leaves the global RNG alone (exact resume).
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=_stack,
                        generator=torch.Generator().manual_seed(sampler.seed),
                        persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)
    yield from loader
