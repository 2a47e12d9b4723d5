"""The fast path: bf16 autocast, channels_last, fused optimizers, torch.compile and
determinism, each one switchable in an experiment's `speed:` params (cnnlab.config.Speed).

`auto` (null) turns on what pays on the device it runs on:
- bf16 autocast where the hardware computes in bf16 natively: CUDA tensor cores, and CPUs with
  AVX512-BF16 or AMX, where oneDNN's bf16 convolutions ran 1.3-2.7x the float32 ones on this
  project's models (README "Speed"). bf16 has float32's exponent range, so no loss scaling is
  needed. On other CPUs bf16 is emulated and slower, so they stay float32.
- channels_last on CUDA and on the CPU: cuDNN and oneDNN both have NHWC convolution kernels that
  skip a layout change per layer.
- a fused optimizer on CUDA: one kernel updates every parameter instead of several per tensor.
Every choice is deterministic on the CPU, so a CPU run stays bit-identical from run to run.
"""

from __future__ import annotations

import contextlib
import functools
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
    native_bf16 = cuda or (device.type == "cpu" and cpu_has_native_bf16())
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and native_bf16)
    return FastPath(
        device_type=device.type,
        autocast=torch.bfloat16 if bf16 else None,
        channels_last=(device.type in ("cuda", "cpu") if cfg.channels_last is None
                       else cfg.channels_last),
        fused_optimizer=cuda if cfg.fused_optimizer is None else cfg.fused_optimizer,
        compile=cfg.compile,
        deterministic=cfg.deterministic,
    )


@functools.cache  # a fact of the hardware; score() and predict() resolve the path every call
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16, or AMX tiles). torch
    exposes the probes as private helpers; a torch without them counts as no."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


@contextlib.contextmanager
def backends(fast: FastPath) -> Iterator[None]:
    """Process-wide switches for one training run, put back as they were when it ends, so a
    notebook or test that trains several experiments in one process gives each its own. cuDNN's
    autotuner picks the fastest kernel per shape (the shapes are fixed here) unless determinism
    is asked for, which also makes cuBLAS use a fixed workspace and torch refuse
    nondeterministic ops. Nothing to set on other devices."""
    if fast.device_type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = True  # float32 layers (the loss) on tensor cores
        cudnn.benchmark = not fast.deterministic
        if fast.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at cuBLAS start
            cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=False)
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


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
