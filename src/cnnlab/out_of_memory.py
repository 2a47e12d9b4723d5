"""Running out of memory, said in one line with the setting to change.

A batch too large for the device fails deep inside torch, as a different exception on each
device: torch.OutOfMemoryError on CUDA, a RuntimeError from the CPU allocator ("DefaultCPUAllocator:
can't allocate memory") or from MPS ("MPS backend out of memory"), MemoryError from NumPy. The
training and scoring entry points are wrapped here, so the user reads which batch size ran out of
memory on which device, and the `dvc exp run -S` override that makes it smaller, not a traceback.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

from cnnlab.errors import CnnlabError

P = ParamSpec("P")
R = TypeVar("R")

_ALLOCATOR_MESSAGES = ("DefaultCPUAllocator: can't allocate memory",
                       "DefaultCPUAllocator: not enough memory", "out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _ALLOCATOR_MESSAGES)


def smaller_batch(batch_size: int) -> int:
    """The largest power of two below `batch_size` (1 for a batch of 1 or 2)."""
    return 1 << max(0, (batch_size - 1).bit_length() - 1)


def training_message(batch_size: int, device: torch.device, experiment: str) -> str:
    where = f"out of memory at batch size {batch_size} on {device} while training"
    if batch_size == 1:
        return f"{where}: even one image does not fit; use a smaller model, input size or device"
    return (f"{where}; try a smaller batch, e.g. "
            f"-S experiments.{experiment}.batch_size={smaller_batch(batch_size)}")


def scoring_message(batch_size: int, device: torch.device) -> str:
    # The scoring batch is not a param (Experiment.eval_batch_size): it holds no gradients
    # and is far cheaper than a training batch, so this means the device is nearly full anyway.
    return (f"out of memory at batch size {batch_size} on {device} while scoring; free memory "
            f"on the device or run on one with more")


def _arguments(fn: Callable, args: tuple, kwargs: dict) -> dict:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def when_out_of_memory(line: Callable[[dict], str]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator: out of memory inside the function becomes a CnnlabError whose message
    `line` builds from the call's arguments, bound by name (defaults included)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                raise CnnlabError(line(_arguments(fn, args, kwargs))) from exc

        return wrapper

    return decorate


def _training_line(given: dict) -> str:
    return training_message(given["exp"].batch_size, torch.device(given["device"]), given["name"])


def _scoring_line(given: dict) -> str:
    batch = given.get("batch_size") or given["exp"].eval_batch_size()
    return scoring_message(batch, given["data"].device)


# For cnnlab.train.loop.train(exp, dataset, device, ..., name=...): names the batch size and the
# device, with a smaller batch to try.
training_memory = when_out_of_memory(_training_line)
# For the scoring passes, score(model, data, exp, ...) and predict(model, data, exp,
# batch_size=None): names the batch size and the device.
scoring_memory = when_out_of_memory(_scoring_line)
