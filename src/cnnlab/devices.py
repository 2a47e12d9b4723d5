"""Pick the training device, and give each run on a machine with several GPUs one of its own.

`auto` means CUDA if present, else Apple's MPS, else the CPU; `cuda:K` means GPU K exactly.

Queued sweeps: `dvc queue start -j N` starts N workers that are plain processes with no GPU of
their own (iterative/dvc#4586), so every run would land on cuda:0. A stage therefore calls
`hold_device`, which claims one GPU for the run: one lock file per GPU in a folder every process
of the machine shares, taken with flock(2). `auto` (or `cuda`) takes the first GPU no other run
holds and waits while all are held; `cuda:K` waits for K alone. The kernel drops a flock when the
process exits, however it exits (SIGKILL and crashes included), so a GPU is never left claimed
by a run that is gone. With one GPU nothing is locked: runs share it, as they always did.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError

LOCK_DIR_ENV = "CNNLAB_GPU_LOCK_DIR"  # overrides where the per-GPU lock files live
_POLL_SECONDS = 0.5
_held: dict[int, int] = {}  # GPU index -> open lock file descriptor, in this process


def resolve_device(name: str = "auto") -> torch.device:
    """The device `name` means here; a one-line error when it is not available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        return _cuda_device(name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise CnnlabError("device: mps was asked for but MPS is not available here "
                          "(set device: auto or cpu)")
    if name not in ("cpu", "mps"):
        raise CnnlabError(f"device: {name!r} is not a device (use auto, cpu, mps, cuda or "
                          f"cuda:<index>)")
    return torch.device(name)


def _cuda_device(name: str) -> torch.device:
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise CnnlabError(f"device: {name!r} is not a device (use auto, cpu, mps, cuda or "
                          f"cuda:<index>)")
    if not torch.cuda.is_available():
        raise CnnlabError(f"device: {name} was asked for but no CUDA GPU is available here "
                          f"(set device: auto or cpu)")
    if match.group(1) is None:
        return torch.device("cuda")
    index, count = int(match.group(1)), torch.cuda.device_count()
    if index >= count:
        raise CnnlabError(f"device: {name} was asked for but only {count} CUDA GPU"
                          f"{'s are' if count > 1 else ' is'} visible here (cuda:0 to "
                          f"cuda:{count - 1})")
    return torch.device("cuda", index)


def hold_device(name: str = "auto", wait: bool = True) -> torch.device:
    """resolve_device(name), and where several CUDA GPUs are visible, one of them claimed for
    this process until it exits (see the module's docstring). Under torchrun each rank holds
    its LOCAL_RANK's GPU, the one torchrun_group will use. A process that already holds a
    suitable GPU gets it again, so calling this twice in one process never waits on itself."""
    device = resolve_device(name)
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return device  # one GPU (or none): nothing to share out
    local_rank = os.environ.get("LOCAL_RANK", "")
    if "RANK" in os.environ and local_rank.isdigit():
        candidates = [int(local_rank)]
    elif device.index is not None:
        candidates = [device.index]
    else:
        candidates = list(range(torch.cuda.device_count()))
    index = _claim(candidates, wait)
    torch.cuda.set_device(index)  # work that names no index (cuBLAS handles, "cuda") goes here
    return torch.device("cuda", index)


@contextlib.contextmanager
def claimed_device(name: str = "auto", wait: bool = True) -> Iterator[torch.device]:
    """hold_device for part of a process (a notebook, a benchmark): the GPU it claimed is
    released on the way out; one this process held before stays held."""
    before = set(_held)
    device = hold_device(name, wait)
    try:
        yield device
    finally:
        for index in set(_held) - before:
            release_gpu(index)


def held_gpus() -> list[int]:
    """The GPU indices this process holds, in order."""
    return sorted(_held)


def release_gpu(index: int) -> None:
    """Give GPU `index` back before this process exits (closing the file drops the flock)."""
    fd = _held.pop(index, None)
    if fd is not None:
        os.close(fd)


def lock_dir() -> Path:
    """The folder of the per-GPU lock files: machine-wide, so DVC's queue workers, each in its
    own temporary workspace, all see the same ones."""
    folder = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) /
                  "cnnlab-gpu-locks")
    try:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o1777)  # like /tmp: every user's runs share it, none can delete others'
    except OSError as exc:
        raise CnnlabError(f"cannot create the GPU lock folder {folder}: {exc.strerror} (set "
                          f"{LOCK_DIR_ENV} to a writable folder)") from exc
    return folder


def _claim(candidates: list[int], wait: bool) -> int:
    for index in candidates:
        if index in _held:
            return index
    announced = False
    while True:
        for index in candidates:
            if _try_lock(index):
                return index
        which = f"cuda:{candidates[0]}" if len(candidates) == 1 else \
            f"all {len(candidates)} GPUs"
        if not wait:
            raise CnnlabError(f"{which} held by other cnnlab runs (lock files in {lock_dir()})")
        if not announced:  # one line, not one per poll
            print(f"{which} held by other cnnlab runs; waiting for one to finish "
                  f"(lock files in {lock_dir()})", file=sys.stderr, flush=True)
            announced = True
        time.sleep(_POLL_SECONDS)


def _try_lock(index: int) -> bool:
    path = lock_dir() / f"{_gpu_key(index)}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise CnnlabError(f"cannot open the GPU lock file {path}: {exc.strerror} (set "
                          f"{LOCK_DIR_ENV} to a writable folder)") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    with contextlib.suppress(OSError):  # who holds it, for a person who looks; not needed
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} cuda:{index}\n".encode())
    _held[index] = fd
    return True


def _gpu_key(index: int) -> str:
    """The lock file's name for GPU `index`: its UUID, so two processes that see the GPUs under
    different CUDA_VISIBLE_DEVICES numberings still lock the same physical GPU. A torch that
    cannot report UUIDs (or a test that simulates GPUs) falls back to the index."""
    try:
        return f"gpu-{torch.cuda.get_device_properties(index).uuid}"
    except (RuntimeError, AssertionError, AttributeError):
        return f"gpu{index}"


def describe_device(device: torch.device) -> str:
    """A human-readable name for metrics files: the GPU model, or the CPU thread count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
