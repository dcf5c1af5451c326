"""One dataset per optimisation step on every process, without communication.

The reference draws every step's batch from one dataset, chosen at random in proportion to its number of batches,
and the same on all processes (the in-batch loss gathers positives across processes, so they must share a
dataset). With accelerate (and so the transformers Trainer) a batch sampler is sharded by handing batch i to
process i % world_size; this sampler therefore emits `world_size` consecutive batches of one dataset per step.
Every process builds the same sampler with the same seed, so all derive the same schedule locally.

The schedule is a random order of all (world_size * batch_size)-sized groups of every dataset: shuffling the
multiset of group labels is the same as drawing each step's dataset with probability proportional to its
remaining groups, and uses every group exactly once per epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


class OneDatasetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of global indices into a concatenation of datasets; each run of `world_size` batches is one dataset.

    Args:
        dataset_lengths: rows of each dataset, in concatenation order (`TrainingCorpus.dataset_lengths`).
        batch_size: rows per batch per process.
        world_size: number of processes that shard this sampler (accelerate: `num_processes`).
        seed: seed of the row shuffles and of the dataset schedule; must be equal on every process.
        drop_last: drop each dataset's last incomplete group (every index used at most once per epoch). With
            `False` the incomplete group is filled up with rows from the start of the dataset's shuffled order,
            so every row is seen and every batch stays full (needed by accelerate's sharding).
        names: the datasets' names, for messages (default: their positions).

    Call `set_epoch(epoch)` before each epoch (the transformers Trainer does) for a fresh shuffle.
    """

    def __init__(
        self,
        dataset_lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("world_size", world_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not dataset_lengths or any(not isinstance(n, (int, np.integer)) or n < 0 for n in dataset_lengths):
            raise ValueError(f"dataset_lengths must be non-empty, of non-negative integers, got {dataset_lengths!r}")
        self.dataset_lengths = [int(n) for n in dataset_lengths]
        self.batch_size = batch_size  # read by accelerate's BatchSamplerShard
        self.world_size = world_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.offsets = np.cumsum([0] + self.dataset_lengths)[:-1].tolist()
        self.group_size = batch_size * world_size
        self.num_groups = [self._groups(n) for n in self.dataset_lengths]
        names = list(names) if names is not None else [f"#{i}" for i in range(len(self.dataset_lengths))]
        if len(names) != len(self.dataset_lengths):
            raise ValueError(f"names must give one name per dataset ({len(self.dataset_lengths)}), got {len(names)}")
        unused = [
            f"{names[i]} ({n} rows)"
            for i, (n, g) in enumerate(zip(self.dataset_lengths, self.num_groups))
            if n and not g
        ]
        if unused:
            logger.warning(
                "dataset(s) %s have fewer than world_size * batch_size = %d rows and are never used",
                ", ".join(unused),
                self.group_size,
            )
        if not sum(self.num_groups):
            raise ValueError(
                f"no dataset has a full group of world_size * batch_size = {self.group_size} rows "
                f"(lengths {self.dataset_lengths}); lower batch_size or set drop_last=False"
            )

    def _groups(self, length: int) -> int:
        return length // self.group_size if self.drop_last else -(-length // self.group_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.num_groups) * self.world_size

    def schedule(self) -> np.ndarray:
        """The dataset position of every step of the current epoch, (num_steps,)."""
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        return rng.permutation(np.repeat(np.arange(len(self.num_groups)), self.num_groups))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 0])
        rows = []
        for length, offset, groups in zip(self.dataset_lengths, self.offsets, self.num_groups):
            order = rng.permutation(length) + offset
            rows.append(np.resize(order, groups * self.group_size))  # drop_last=False: wraps around to fill
        next_group = [0] * len(rows)
        for position in self.schedule():
            start = next_group[position] * self.group_size
            next_group[position] += 1
            group = rows[position][start : start + self.group_size]
            for b in range(self.world_size):
                yield group[b * self.batch_size : (b + 1) * self.batch_size].tolist()
