"""Data-parallel training over processes started by torchrun (torch.distributed and DDP).

torchrun starts one process per GPU (or per CPU worker) and tells each its RANK, LOCAL_RANK and
WORLD_SIZE. Every rank holds the whole split, draws the same shuffled order from the experiment's
seed and trains on its own slice of each global batch; DDP averages the gradients during
backward, so one step of all the ranks is one step on the global batch of `batch_size` images.

A plain `python stages/train.py` has none of those variables and runs as `SINGLE`, where every
helper below hands back its input untouched: the one-process path is the loop as it always was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnlab.devices import describe_device
from cnnlab.errors import CnnlabError

T = TypeVar("T")


@dataclass(frozen=True)
class Parallel:
    """This process's place among the data-parallel ranks."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes outputs and shows progress."""
        return self.rank == 0

    def check_batches(self, images: int, batch_size: int) -> None:
        """Fail before training if some rank would get an empty shard of a batch (the last,
        short one included): its forward pass would have nothing to average."""
        sizes = [min(batch_size, images)] + ([images % batch_size] if images % batch_size else [])
        if min(sizes) < self.world_size:
            raise CnnlabError(f"{self.world_size} processes cannot share a batch of {min(sizes)} "
                              f"images ({images} training images, batch_size {batch_size}); use "
                              f"fewer processes or another batch_size")

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch; the ranks' slices are disjoint, cover
        the batch and differ in size by at most one image."""
        if self.world_size == 1:
            return batch
        n = len(batch)
        return batch[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around `model`: it averages the gradients over the ranks during backward.

        BatchNorm stays per rank (no SyncBatchNorm): each rank normalises its shard, as with the
        usual per-GPU batch, at no extra all-reduce per layer. DDP broadcasts rank 0's running
        statistics at every forward, so the model rank 0 scores and saves carries rank 0's."""
        if self.world_size == 1:
            return model
        return DistributedDataParallel(model)

    def own_generator(self, gen: torch.Generator, seed: int) -> torch.Generator:
        """The stream for the draws each rank makes for its own shard: augmentation, MixUp
        pairings and (through torch's global generator, reseeded here) dropout. Sharing `gen`
        would give every rank the same flips and crops, and shards of unequal size would pull
        the ranks' shuffling apart. Call it after the model's initialisation, which all ranks
        draw alike. On one process this is `gen` itself and nothing is reseeded."""
        if self.world_size == 1:
            return gen
        own = int(np.random.SeedSequence([seed, self.rank, 0x72616E6B]).generate_state(1)[0])
        torch.manual_seed(own)  # "rank": apart from the experiment's other streams
        return torch.Generator(device=gen.device).manual_seed(own)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the ranks (every rank must call this at the same point)."""
        if self.world_size == 1:
            return value
        total = value.clone()
        tdist.all_reduce(total)
        return total

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """`value` averaged over the ranks, e.g. each rank's mean loss of its shards: equal to
        the global batch's mean but for the last, short batch, whose shards may differ by an
        image."""
        return value if self.world_size == 1 else self.sum(value) / self.world_size

    def gather(self, value: T) -> list[T]:
        """Every rank's `value` (picklable: tensors, numbers, containers), in rank order."""
        if self.world_size == 1:
            return [value]
        values: list[Any] = [None] * self.world_size
        tdist.all_gather_object(values, value)
        return values

    def describe(self, device: torch.device) -> str:
        """The device for the run summary, with the number of processes that shared it."""
        where = describe_device(device)
        return where if self.world_size == 1 else f"{self.world_size} processes x {where}"


SINGLE = Parallel()
# What torchrun sets for each process and init_process_group reads.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def torchrun_group(device: torch.device) -> Iterator[tuple[Parallel, torch.device]]:
    """Yield (this rank, its device). Under torchrun: join the process group (NCCL between
    GPUs, Gloo on the CPU) on cuda:LOCAL_RANK or the CPU, and leave it on the way out, errors
    included. Without torchrun's variables: (SINGLE, `device`) and no group."""
    if "RANK" not in os.environ:
        yield SINGLE, device
        return
    missing = [k for k in TORCHRUN_VARIABLES if k not in os.environ]
    if missing:
        raise CnnlabError(f"RANK is set but {', '.join(missing)} not: start the stage with "
                          f"torchrun, or without RANK")
    rank, world_size, local_rank = (_env_int(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise CnnlabError(f"torchrun started local rank {local_rank} but only "
                              f"{torch.cuda.device_count()} CUDA GPUs are visible (use "
                              f"--nproc_per_node {torch.cuda.device_count()} or fewer)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # NCCL's collectives and all_gather_object use it
        tdist.init_process_group("nccl", device_id=device)
    elif device.type == "cpu":
        tdist.init_process_group("gloo")
    else:
        raise CnnlabError(f"torchrun: data-parallel training runs on cuda or cpu, not "
                          f"{device.type} (set device: cpu)")
    try:
        yield Parallel(rank, world_size), device
    finally:
        tdist.destroy_process_group()


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.isdigit():
        raise CnnlabError(f"{name} must be a whole number, got {value!r} (start the stage "
                          f"with torchrun, or without RANK)")
    return int(value)
