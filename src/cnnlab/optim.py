"""Optimizers by name, each built from the hyperparameters in params.yaml that it understands."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from cnnlab.config import OptimizerConfig
from cnnlab.errors import CnnlabError

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: dict[str, Callable[[Params, OptimizerConfig], torch.optim.Optimizer]] = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=c.betas, eps=c.eps,
                                          weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=c.betas, eps=c.eps,
                                            weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                        weight_decay=c.weight_decay),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, alpha=c.alpha, eps=c.eps,
                                                momentum=c.momentum,
                                                weight_decay=c.weight_decay),
}


def build_optimizer(params: Params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer over `params`, which should be only the trainable ones."""
    if cfg.name not in OPTIMIZERS:
        raise CnnlabError(f"unknown optimizer {cfg.name!r} (choose from: "
                          f"{', '.join(sorted(OPTIMIZERS))})")
    if cfg.name == "sgd" and cfg.nesterov and cfg.momentum <= 0:
        raise CnnlabError("optimizer: nesterov needs momentum > 0")
    return OPTIMIZERS[cfg.name](params, cfg)
