"""Resume an interrupted training run from the end of its last finished epoch.

`TrainState` is everything the rest of a run depends on, in one object: the weights, the
optimizer and the schedule, every random stream (shuffling, each rank's augmentation, dropout
through torch's global generators, MixUp), the loss window, the step, the epoch history, the best
epoch so far and the log records. Its `state_dict()` covers each of its fields, so a new piece of
state is one field here, saved and restored with the rest. After every epoch the loop hands it to
`save_state`; re-running the same experiment `restore_state`s it and continues, so a run killed
mid-epoch (SIGTERM or SIGKILL) and re-run ends with the same weights and metrics, bit for bit on
the CPU, as one never interrupted.

The file is written atomically and stamped with a fingerprint of the experiment's settings, its
data and the number of processes; a file from other settings is ignored, never half-applied.
torch.load reads it with weights_only=True: tensors and plain containers, no code. Under torchrun,
rank 0 writes it with every rank's own streams under "ranks", and each rank loads the file and
its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from cnnlab.atomic import atomic_path
from cnnlab.config import Experiment
from cnnlab.models.checkpoints import UnsafeCheckpoint, read_tensors
from cnnlab.train.distributed import Parallel
from cnnlab.train.mixup import MixUp
from cnnlab.train.schedulers import Schedule

FORMAT = 3  # 2: the per-rank streams under "ranks"; 3: one key per TrainState field
PER_RANK = {"per_rank": True}  # field metadata: each rank holds its own value


class TrainLogger(Protocol):
    """Where the loop reports progress; cnnlab.train.training_log writes it with dvclive."""

    def log_step(self, step: int, loss: float, lr: float) -> None: ...

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None: ...

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None: ...


class LogRecorder:
    """Passes log calls on to the real logger (if any) and keeps them, in order, so that a
    resumed run can replay the series of the epochs before the interruption."""

    def __init__(self, logger: TrainLogger | None):
        self.logger = logger
        self.records: list[list] = []

    def __bool__(self) -> bool:
        return self.logger is not None

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self._call("log_step", step, loss, lr)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self._call("log_epoch", epoch, step, metrics)

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None:
        self._call("log_grad_norms", step, norms)

    def _call(self, method: str, *args: Any) -> None:
        self.records.append([method, *args])
        if self.logger is not None:
            getattr(self.logger, method)(*args)

    def state_dict(self) -> list[list]:
        return self.records

    def load_state_dict(self, records: list[list]) -> None:
        self.records = []
        for method, *args in records:
            self._call(method, *args)


class LossWindow:
    """The mean training loss since the last log point, summed on the device (no host sync)."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.count += 1

    def take(self) -> torch.Tensor:
        mean = self.total / self.count
        self.total = torch.zeros_like(self.total)
        self.count = 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.cpu(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total.copy_(state["total"])
        self.count = state["count"]


class GlobalRng:
    """torch's global generators, which dropout draws from: the CPU one, and on CUDA the
    training device's own (CUDA kernels never touch the CPU generator)."""

    def __init__(self, device: torch.device):
        self.device = device

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        torch.set_rng_state(state["cpu"])
        if state["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)


@dataclass(eq=False)
class TrainState:
    """What a training run has become so far. A field is saved and restored by `state_dict`
    and `load_state_dict` without more code: an object with a state_dict (or a torch
    Generator) through it, any other value as it is. PER_RANK fields are each rank's own."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    gen: torch.Generator  # shuffling (every rank alike) and, on one process, augmentation
    own_gen: torch.Generator = field(metadata=PER_RANK)  # this rank's augmentation and MixUp
    global_rng: GlobalRng = field(metadata=PER_RANK)  # dropout
    mixup: MixUp | None  # its lambdas' NumPy stream, drawn alike on every rank
    window: LossWindow = field(metadata=PER_RANK)
    log: LogRecorder
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int | None = None  # keep_best: the epoch best on eval_split so far
    best_accuracy: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None  # its weights, on the CPU

    def state_dict(self) -> dict[str, Any]:
        return {f.name: _state_of(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if _is_stateful(value):
                _load_into(value, state[f.name])
            else:
                setattr(self, f.name, state[f.name])

    @classmethod
    def per_rank(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("per_rank")]


def _is_stateful(value: object) -> bool:
    return isinstance(value, torch.Generator) or hasattr(value, "load_state_dict")


def _state_of(value: Any) -> Any:
    if isinstance(value, torch.Generator):
        return value.get_state()  # a CPU tensor, whatever the generator's device
    return value.state_dict() if _is_stateful(value) else value


def _load_into(value: Any, state: Any) -> None:
    if isinstance(value, torch.Generator):
        value.set_state(state)
    else:
        value.load_state_dict(state)


def fingerprint(exp: Experiment, dataset_name: str, train_images: int, processes: int = 1,
                init_digest: str = "") -> str:
    """What must be equal for a saved state to continue this run. Not the device: a run may
    resume on another one (then bit-identity is not promised, the training still is correct).
    The number of processes, though: each has random streams and BatchNorm batches of its own;
    and, for a chained run, the model it started from (`init_digest`, its checkpoint's hash)."""
    settings = dataclasses.asdict(dataclasses.replace(exp, device="auto"))
    parts = [settings, dataset_name, train_images, processes, FORMAT]
    text = json.dumps(parts + ([init_digest] if init_digest else []), sort_keys=True,
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


def save_state(resume: ResumeFile, state: TrainState, parallel: Parallel) -> None:
    """Every rank calls this at the same point: rank 0 writes the state with each rank's own
    fields gathered under "ranks", in rank order."""
    saved = state.state_dict()
    ranks = parallel.gather({name: saved.pop(name) for name in TrainState.per_rank()})
    if parallel.is_main:
        resume.save({**saved, "ranks": ranks})


def restore_state(resume: ResumeFile, state: TrainState, parallel: Parallel) -> bool:
    """Load the saved state of this run, with this rank's own fields, into `state`; False
    when there is none to continue."""
    saved = resume.load()
    if saved is None:
        return False
    shared = {k: v for k, v in saved.items() if k not in ("ranks", "stamp")}
    state.load_state_dict({**shared, **saved["ranks"][parallel.rank]})
    return True
