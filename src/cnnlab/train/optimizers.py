"""Optimizers by name, built from the hyperparameters in params.yaml that each one takes.

Values the user leaves out come from a preset: `torch` reads torch.optim's own signature defaults
(so they follow torch), `keras` is the table below, Keras' documented defaults, for study 004.
Keras adds epsilon to sqrt(v) before bias correction where torch adds it after; with eps 1e-7 the
difference is far below the noise between seeds, so the torch implementations are used.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.fastpath import FastPath, fused_kwargs

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

# The OptimizerConfig fields; each optimizer takes the ones its constructor names.
HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "momentum", "nesterov", "alpha")

# keras.optimizers.{Adam, AdamW, SGD, RMSprop} defaults (Keras 3 docs); rho is torch's alpha.
KERAS_DEFAULTS: dict[str, dict[str, Any]] = {
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.004},
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "rmsprop": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "weight_decay": 0.0},
}


def accepted(name: str) -> tuple[str, ...]:
    """The hyperparameters optimizer `name` takes, in HYPERPARAMETERS order."""
    signature = inspect.signature(OPTIMIZERS[name]).parameters
    return tuple(key for key in HYPERPARAMETERS if key in signature)


def preset_defaults(preset: str, name: str) -> dict[str, Any]:
    """Default hyperparameters of optimizer `name` under `preset` ('torch' or 'keras')."""
    if name not in OPTIMIZERS:
        return {}  # the config's `choices` check reports the unknown name
    if preset == "keras":
        return dict(KERAS_DEFAULTS[name])
    signature = inspect.signature(OPTIMIZERS[name]).parameters
    return {key: _plain(signature[key].default) for key in accepted(name)}


def _plain(value: Any) -> Any:
    # torch declares some defaults as tensors or tuples of them; params hold plain numbers.
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def build_optimizer(params: Params, cfg, fast: FastPath | None = None) -> torch.optim.Optimizer:
    """Build the optimizer over `params`, which should be only the trainable ones. `cfg` is a
    validated cnnlab.config.OptimizerConfig, its preset's defaults already filled in. `fast`
    may ask for torch's fused kernel, which computes the same update in one launch."""
    if cfg.name not in OPTIMIZERS:  # a config built in code skips the params.yaml check
        raise CnnlabError(f"unknown optimizer {cfg.name!r} (choose from: "
                          f"{', '.join(sorted(OPTIMIZERS))})")
    cls = OPTIMIZERS[cfg.name]
    extra = fused_kwargs(cls, fast) if fast is not None else {}
    return cls(params, **{key: getattr(cfg, key) for key in accepted(cfg.name)}, **extra)
