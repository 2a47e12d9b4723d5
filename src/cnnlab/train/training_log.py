"""Training logs through dvclive, written where DVC expects them and only when training finished.

The series share one dvclive directory: `loss` and `lr` every `log_every` steps (x = global step),
`grad_norm/<layer>` at the same points when asked for, and `epoch/*` once per epoch (x = epoch).
dvclive writes into a temporary directory that replaces the final one at the end, so a killed run
never leaves half a log under the name DVC tracks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from dvclive import Live

from cnnlab.atomic import atomic_dir


class DvcLiveLogger:
    def __init__(self, live: Live):
        self.live = live

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.live.step = step
        self.live.log_metric("loss", loss)
        self.live.log_metric("lr", lr)  # the schedule as it was applied

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None:
        self.live.step = step
        for layer, value in norms.items():
            self.live.log_metric(f"grad_norm/{layer}", value)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.live.step = epoch
        for key, value in metrics.items():
            self.live.log_metric(f"epoch/{key}", value)


@contextlib.contextmanager
def training_log(out_dir: str | Path) -> Iterator[tuple[DvcLiveLogger, dict]]:
    """Yield (logger, summary); the summary dict is written to metrics.json beside the series."""
    with atomic_dir(out_dir) as tmp:
        # Stage outputs are declared in dvc.yaml; dvclive must not edit it or make DVC experiments.
        live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=False, report=None)
        summary: dict = {}
        yield DvcLiveLogger(live), summary
        live.summary = summary  # the run's own totals, not just the last logged values
        live.end()  # writes metrics.json
