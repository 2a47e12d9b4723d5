"""Optimizers by name, built from the hyperparameters in params.yaml that each one takes.

Values the user leaves out are filled here from the experiment's preset (cnnlab.catalog):
`torch` is torch.optim's own signature defaults, `keras` Keras' documented defaults, for study
004. Keras adds epsilon to sqrt(v) before bias correction where torch adds it after; with eps 1e-7
the difference is far below the noise between seeds, so the torch implementations are used.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cnnlab.config import OptimizerConfig
from cnnlab.errors import CnnlabError
from cnnlab.fastpath import FastPath, fused_kwargs

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(params: Params, cfg: OptimizerConfig, fast: FastPath | None = None
                    ) -> torch.optim.Optimizer:
    """Build the optimizer over `params`, which should be only the trainable ones, with every
    hyperparameter `cfg` leaves out taken from its preset. `fast` may ask for torch's fused
    kernel, which computes the same update in one launch."""
    if cfg.name not in OPTIMIZERS:  # a config built in code skips the params.yaml check
        raise CnnlabError(f"unknown optimizer {cfg.name!r} (choose from: "
                          f"{', '.join(sorted(OPTIMIZERS))})")
    cls = OPTIMIZERS[cfg.name]
    extra = fused_kwargs(cls, fast) if fast is not None else {}
    return cls(params, **cfg.settings(), **extra)
