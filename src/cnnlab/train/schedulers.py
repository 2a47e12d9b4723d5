"""Learning-rate schedules from params, as torch's own schedulers.

`build_scheduler` also says when to step: OneCycleLR and cosine annealing step after every batch
(as study 003 did), the decay schedules after every epoch, so their settings count epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from cnnlab.config import Scheduler


@dataclass
class Schedule:
    scheduler: lr_scheduler.LRScheduler | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()

    def state_dict(self) -> dict | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Scheduler, epochs: int,
                    steps_per_epoch: int) -> Schedule:
    total = epochs * steps_per_epoch
    if cfg.name == "none":
        return Schedule(None, per_batch=False)
    if cfg.name == "onecycle":
        return Schedule(lr_scheduler.OneCycleLR(
            # max_lr null: the optimizer's own learning rate (its preset's, if left out too).
            optimizer, max_lr=cfg.max_lr or optimizer.defaults["lr"], total_steps=total,
            pct_start=cfg.pct_start,
            anneal_strategy=cfg.anneal_strategy, div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor), per_batch=True)
    if cfg.name == "cosine":
        return Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                       eta_min=cfg.eta_min), per_batch=True)
    if cfg.name == "step":
        return Schedule(lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma),
                        per_batch=False)
    if cfg.name == "multistep":
        return Schedule(lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones),
                                                 gamma=cfg.gamma), per_batch=False)
    if cfg.name == "exponential":
        return Schedule(lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma), per_batch=False)
    raise AssertionError(f"scheduler {cfg.name!r} is in the config's choices but not built here")
