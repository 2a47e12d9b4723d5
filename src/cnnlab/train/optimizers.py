"""Optimizers by name, built from the hyperparameters in params.yaml that each one takes.

Values the user leaves out are filled here from the experiment's preset (cnnlab.catalog):
`torch` is torch.optim's own signature defaults, `keras` Keras' documented defaults, for study
004. The `keras` preset also switches the update rule where Keras' differs from torch's:
Keras' RMSprop divides by sqrt(v + eps) where torch's divides by sqrt(v) + eps, and Keras' Adam
adds eps to sqrt(v) before bias correction where torch's adds it after. With Keras' eps of 1e-7
and small gradients these differ by far more than rounding, so `preset: keras` builds
cnnlab.train.keras_optimizers' KerasRMSprop and KerasAdam, which follow Keras 3's source.
SGD and AdamW stay on torch (see KERAS_OPTIMIZERS).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cnnlab.config import OptimizerConfig
from cnnlab.errors import CnnlabError
from cnnlab.fastpath import FastPath, fused_kwargs
from cnnlab.train.keras_optimizers import KerasAdam, KerasRMSprop

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

# What `preset: keras` builds instead of OPTIMIZERS' class. Not listed, so on torch:
# - sgd: Keras 3's SGD with momentum 0 (study 004's) is w -= lr * g, torch's exactly. (With
#   momentum Keras keeps lr inside the velocity, equal to torch only at a constant lr.)
# - adamw: Keras' AdamW is its Adam (eps before bias correction) plus decoupled decay; no study
#   here uses it, so it keeps torch's rule until one does.
KERAS_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": KerasAdam,
    "rmsprop": KerasRMSprop,
}


def build_optimizer(params: Params, cfg: OptimizerConfig, fast: FastPath | None = None
                    ) -> torch.optim.Optimizer:
    """Build the optimizer over `params`, which should be only the trainable ones, with every
    hyperparameter `cfg` leaves out taken from its preset. `fast` may ask for torch's fused
    kernel, which computes the same update in one launch (torch's classes only: the Keras
    rules have no fused kernel)."""
    if cfg.name not in OPTIMIZERS:  # a config built in code skips the params.yaml check
        raise CnnlabError(f"unknown optimizer {cfg.name!r} (choose from: "
                          f"{', '.join(sorted(OPTIMIZERS))})")
    if cfg.preset == "keras" and cfg.name in KERAS_OPTIMIZERS:
        return KERAS_OPTIMIZERS[cfg.name](params, **cfg.settings())
    cls = OPTIMIZERS[cfg.name]
    extra = fused_kwargs(cls, fast) if fast is not None else {}
    return cls(params, **cfg.settings(), **extra)
