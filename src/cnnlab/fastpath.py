"""The GPU fast path: bf16 autocast, channels_last, fused optimizers, torch.compile and
determinism, each one switchable in an experiment's `speed:` params (cnnlab.config.Speed).

`auto` (null) turns on what pays on CUDA: bf16 autocast roughly doubles convolution throughput on
tensor cores and needs no loss scaling (bf16 has float32's exponent range); channels_last lets
cuDNN pick its NHWC kernels without transposing each layer; a fused optimizer updates every
parameter in one kernel instead of several per tensor. On the CPU they do not pay (bf16 matmuls are
emulated on most CPUs, and oneDNN already picks its own layout), so the CPU loop stays float32 and
bit-identical from run to run.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.config import Speed


@dataclass(frozen=True)
class FastPath:
    """What `Speed` resolves to on one device."""

    device_type: str
    autocast: torch.dtype | None  # None: float32 throughout
    channels_last: bool
    fused_optimizer: bool
    compile: bool
    deterministic: bool

    def describe(self) -> str:
        """For logs and the train summary, e.g. 'bf16 autocast, channels_last, fused'."""
        parts = ["bf16 autocast" if self.autocast is not None else "fp32"]
        parts += [name for name, on in (("channels_last", self.channels_last),
                                        ("fused optimizer", self.fused_optimizer),
                                        ("compiled", self.compile),
                                        ("deterministic", self.deterministic)) if on]
        return ", ".join(parts)


def resolve_fastpath(cfg: Speed, device: torch.device | str) -> FastPath:
    device = torch.device(device)
    cuda = device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    return FastPath(
        device_type=device.type,
        autocast=torch.bfloat16 if bf16 else None,
        channels_last=cuda if cfg.channels_last is None else cfg.channels_last,
        fused_optimizer=cuda if cfg.fused_optimizer is None else cfg.fused_optimizer,
        compile=cfg.compile,
        deterministic=cfg.deterministic,
    )


def configure_backends(fast: FastPath) -> None:
    """Process-wide switches, set once before training. cuDNN's autotuner picks the fastest
    kernel per shape (the shapes are fixed here) unless determinism is asked for, which also
    makes cuBLAS use a fixed workspace and torch refuse nondeterministic ops."""
    if fast.device_type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 layers (e.g. the loss) on tensor cores
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = not fast.deterministic
    if fast.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=False)


def prepare_model(model: nn.Module, fast: FastPath) -> nn.Module:
    """The model in the memory format the fast path wants (in place, and returned)."""
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def compiled(net: nn.Module, fast: FastPath) -> nn.Module:
    """`net` itself, or torch.compile's wrapper around it (which shares its parameters)."""
    return torch.compile(net) if fast.compile else net


def as_input(x: torch.Tensor, fast: FastPath) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if fast.channels_last else x


@contextlib.contextmanager
def autocast(fast: FastPath) -> Iterator[None]:
    """bf16 autocast where the fast path asks for it; a no-op context otherwise. Losses and
    softmax run in float32 inside it (autocast's own policy)."""
    with torch.autocast(fast.device_type, dtype=fast.autocast or torch.float32,
                        enabled=fast.autocast is not None):
        yield


def fused_kwargs(optimizer: type[torch.optim.Optimizer], fast: FastPath) -> dict[str, bool]:
    """{"fused": True} for an optimizer torch has a fused kernel for (Adam, AdamW, SGD), on
    CUDA; nothing otherwise (RMSprop has none; the fused kernels need CUDA tensors)."""
    takes_fused = "fused" in inspect.signature(optimizer).parameters
    if fast.fused_optimizer and takes_fused and fast.device_type == "cuda":
        return {"fused": True}
    return {}
