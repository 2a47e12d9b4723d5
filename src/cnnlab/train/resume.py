"""Resume an interrupted training run from the end of its last finished epoch.

After every epoch the loop hands `ResumeFile.save` everything the rest of the run depends on:
weights, optimizer and scheduler state, every random stream (shuffling and augmentation, dropout,
MixUp), the loss window, the epoch history and the log records so far. Re-running the same
experiment loads it and continues, so a run killed mid-epoch (SIGTERM or SIGKILL) and re-run ends
with the same weights and metrics, bit for bit on the CPU, as one never interrupted.

The file is written atomically and stamped with a fingerprint of the experiment's settings, its
data and the number of processes; a file from other settings is ignored, never half-applied.
torch.load reads it with weights_only=True: tensors and plain containers, no code. Under torchrun,
rank 0 writes it with every rank's own random streams, and each rank loads the file and its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from cnnlab.atomic import atomic_path
from cnnlab.models.checkpoints import UnsafeCheckpoint, read_tensors
from cnnlab.config import Experiment

FORMAT = 2  # 2: the per-rank streams under "ranks"


def fingerprint(exp: Experiment, dataset_name: str, train_images: int, processes: int = 1) -> str:
    """What must be equal for a saved state to continue this run. Not the device: a run may
    resume on another one (then bit-identity is not promised, the training still is correct).
    The number of processes, though: each has random streams and BatchNorm batches of its own."""
    settings = dataclasses.asdict(dataclasses.replace(exp, device="auto"))
    text = json.dumps([settings, dataset_name, train_images, processes, FORMAT], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ResumeFile:
    def __init__(self, path: str | Path, stamp: str):
        self.path = Path(path)
        self.stamp = stamp

    def load(self) -> dict[str, Any] | None:
        """The saved state of this very run, or None (no file, or one from other settings).
        A file naming Python objects beyond tensors was not written by cnnlab: it is refused
        (UnsafeCheckpoint) rather than silently replaced, so the user learns of it."""
        if not self.path.is_file():
            return None
        try:
            state = read_tensors(self.path)
        except UnsafeCheckpoint:
            raise
        except Exception:  # noqa: BLE001 - a damaged file only costs the progress it held
            return None
        return state if isinstance(state, dict) and state.get("stamp") == self.stamp else None

    def save(self, state: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({**state, "stamp": self.stamp}, tmp)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
