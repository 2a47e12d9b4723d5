"""Keep a dataset split on the training device and hand out batches by indexing it.

The whole split is one uint8 tensor, moved to the device once. A batch is `images[idx]`: no
DataLoader workers, no per-image Python and no host-to-device copy inside the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cnnlab.data.prepared import Split
from cnnlab.errors import CnnlabError
from cnnlab.out_of_memory import is_out_of_memory


def seeded_subset(n: int, k: int | None, seed: int | list[int]) -> np.ndarray | None:
    """Indices of a seeded random subset of k out of n items (sorted), or None for all of them."""
    if k is None or k >= n:
        return None
    if k < 1:
        raise CnnlabError(f"subset size must be >= 1, got {k}")
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


class DeviceSplit:
    """A split as device tensors: images uint8 (N, 3, H, W) and labels int64 (N,)."""

    def __init__(self, split: Split, device: torch.device, indices: np.ndarray | None = None):
        images, labels = split.images, split.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]
        try:
            # NHWC on disk -> NCHW for torch, done once here rather than per batch.
            self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            self.images = self.images.permute(0, 3, 1, 2).contiguous()
            self.labels = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            # Not a batch-size problem: the split itself does not fit, so say that instead.
            raise CnnlabError(f"out of memory on {device} holding {len(labels)} images "
                              f"({images.nbytes / 2**20:.0f} MiB) on the device; use fewer "
                              f"(train_fraction, train_subset) or a device with more "
                              f"memory") from exc
        self.device = device

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(
        self, batch_size: int, gen: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches; shuffled by `gen` when given. The last may be short."""
        n = len(self)
        order = torch.randperm(n, generator=gen, device=self.device) if gen is not None else None
        for start in range(0, n, batch_size):
            if order is None:
                yield self.images[start:start + batch_size], self.labels[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                yield self.images[idx], self.labels[idx]
