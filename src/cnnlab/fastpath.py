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

The CUDA failure modes this module handles, each with a working path or a one-line error:
- cuBLAS reads CUBLAS_WORKSPACE_CONFIG once, at its first use in the process: importing this
  module sets it (see _CUBLAS_CONFIG), and a deterministic run refuses to start if it came late.
- adaptive_avg_pool2d has no deterministic CUDA backward: prepare_model swaps in an equal-window
  mean (DeterministicAdaptiveAvgPool2d) for deterministic CUDA runs.
- torch.compile recompiling on the smaller last batch: `compiled` compiles one static graph per
  batch shape, so the last batch costs one more graph, never a slower dynamic-shape one.
- CUDA-graph outputs overwritten by the next replay: `compiled` never turns CUDA graphs on.
- fused optimizers and channels_last: a gradient whose strides differ from its parameter's is
  refused by the fused kernels; prepare_model makes each gradient take its parameter's strides.
- bf16 autocast around BatchNorm: batch norm keeps float32 parameters and running statistics
  and bf16 has float32's range, so nothing overflows (tests/test_gpu_check.py, test_cuda.py).
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
from cnnlab.errors import CnnlabError

# cuBLAS takes its workspace size from CUBLAS_WORKSPACE_CONFIG when the process first uses it and
# never reads it again, while torch checks the variable only when a deterministic op runs: a value
# set after the first matmul passes torch's check yet leaves cuBLAS on the workspace it started
# with. So it is set here, at import, before anything in a stage or test has used CUDA. :4096:8
# (32 MiB) is what deterministic mode needs, and on Hopper also cuBLAS's default size.
_CUBLAS_CONFIG = ":4096:8"
DETERMINISTIC_CUBLAS_CONFIGS = (":4096:8", ":16:8")
_CUBLAS_SET_LATE = "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized()
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_CONFIG)
COMPILE_BACKEND = "inductor"  # tests swap in a recording backend


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
            check_cublas_config()
            cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=False)
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic = saved[:4]
        torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])


def check_cublas_config() -> None:
    """Refuse, in one line, a deterministic CUDA run whose cuBLAS may not be deterministic."""
    value = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if value not in DETERMINISTIC_CUBLAS_CONFIGS:
        raise CnnlabError(f"deterministic: true needs CUBLAS_WORKSPACE_CONFIG set to "
                          f"{' or '.join(DETERMINISTIC_CUBLAS_CONFIGS)}, but it is {value!r} "
                          f"(unset it, and cnnlab sets {_CUBLAS_CONFIG})")
    if _CUBLAS_SET_LATE:
        raise CnnlabError(f"deterministic: true, but CUDA had started in this process before "
                          f"cnnlab set CUBLAS_WORKSPACE_CONFIG, so cuBLAS may ignore it (export "
                          f"CUBLAS_WORKSPACE_CONFIG={_CUBLAS_CONFIG} before starting Python)")


def prepare_model(model: nn.Module, fast: FastPath) -> nn.Module:
    """The model in the memory format the fast path wants (in place, and returned); on CUDA,
    deterministic pooling for a deterministic run and gradients laid out like their parameters
    for a fused optimizer."""
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    if fast.device_type == "cuda" and fast.deterministic:
        use_deterministic_pooling(model)
    if fast.device_type == "cuda" and fast.fused_optimizer:
        align_grad_layouts(model)
    return model


class DeterministicAdaptiveAvgPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d as plain means over equal windows, whose backward is deterministic
    on CUDA; adaptive_avg_pool2d_backward_cuda has only an atomicAdd kernel, which torch refuses
    under use_deterministic_algorithms. Each side of the input must be a multiple of the
    output's (equal windows: global pooling, VGG's 7x7 of a 7x7 map) or the output's a multiple
    of the input's (each output copies one input pixel: VGG's 7x7 of CIFAR's 1x1 map)."""

    def __init__(self, output_size: int | None | tuple[int | None, int | None]):
        super().__init__()
        pair = output_size if isinstance(output_size, tuple) else (output_size, output_size)
        self.output_size = pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dim, size in ((-2, self.output_size[0]), (-1, self.output_size[1])):
            x = _pool_side(x, dim, x.shape[dim] if size is None else size)
        return x

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def _pool_side(x: torch.Tensor, dim: int, out: int) -> torch.Tensor:
    n = x.shape[dim]
    shape = list(x.shape)
    axis = len(shape) + dim  # a positive index, for the slicing below
    if out == n:
        return x
    if n % out == 0:  # equal windows of n // out pixels: the mean of each
        return x.reshape(shape[:axis] + [out, n // out] + shape[axis + 1:]).mean(axis + 1)
    if out % n == 0:  # every input pixel repeated out // n times; its backward is a sum
        expanded = x.unsqueeze(axis + 1).expand(shape[:axis + 1] + [out // n] + shape[axis + 1:])
        return expanded.reshape(shape[:axis] + [out] + shape[axis + 1:])
    raise CnnlabError(f"deterministic: true on CUDA cannot pool {n} pixels to {out} (adaptive "
                      f"average pooling between sizes that do not divide has no deterministic "
                      f"CUDA backward); use deterministic: false or an input size divisible "
                      f"by {out}")


def use_deterministic_pooling(model: nn.Module) -> nn.Module:
    """Swap every nn.AdaptiveAvgPool2d in `model` for DeterministicAdaptiveAvgPool2d (in place;
    pooling has no parameters or buffers, so the state dict is unchanged)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.AdaptiveAvgPool2d:
                setattr(parent, name, DeterministicAdaptiveAvgPool2d(child.output_size))
    return model


def align_grad_layouts(model: nn.Module) -> nn.Module:
    """Give every gradient its parameter's strides as soon as it is accumulated. The fused
    Adam/AdamW/SGD kernels refuse a parameter and gradient of different strides ("params,
    grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout"), and autograd
    may hand a channels_last input's gradient to a weight with a size-1 dimension (a 1x1 conv)
    in other strides than the weight's, as torch.compile may. The copy runs only then."""
    for param in model.parameters():
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(_match_param_strides)
    return model


def _match_param_strides(param: torch.Tensor) -> None:
    grad = param.grad
    if grad is not None and grad.stride() != param.stride():
        param.grad = grad.new_empty_strided(param.size(), param.stride()).copy_(grad)


def compiled(net: nn.Module, fast: FastPath) -> nn.Module:
    """`net` itself, or torch.compile's wrapper around it (which shares its parameters).

    dynamic=False: each batch shape gets its own static graph. An epoch has at most two shapes
    (the full batches and the shorter last one), so that is two compiles per run. torch's default
    would compile the last batch's graph again with a symbolic batch size: slower kernels, and
    with CUDA graphs one more recording per size. CUDA graphs stay off whatever the environment
    says (TORCHINDUCTOR_CUDAGRAPHS): a replay overwrites the previous replay's outputs, so every
    tensor the loop keeps from a step would need cloning first."""
    if not fast.compile:
        return net
    options = {"triton.cudagraphs": False} if COMPILE_BACKEND == "inductor" else None
    return torch.compile(net, backend=COMPILE_BACKEND, dynamic=False, options=options)


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
