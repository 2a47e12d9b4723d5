"""Pick the training device. `auto` means CUDA if present, else Apple's MPS, else the CPU."""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("device: cuda was asked for but no CUDA GPU is available here "
                          "(set device: auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise CnnlabError("device: mps was asked for but MPS is not available here "
                          "(set device: auto or cpu)")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """A human-readable name for metrics files: the GPU model, or the CPU thread count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
