"""Training logs through dvclive, written where DVC expects them and only when training finished.

The series share one dvclive directory, `plots/metrics/`, each a TSV whose first column is its x:
- `loss.tsv` and `lr.tsv` every `log_every` steps, `grad_norm/<layer>.tsv` at the same steps when
  asked for: dvclive's own series, x = the global `step`;
- `epoch/<metric>.tsv` once per epoch, x = `epoch`. dvclive names the first column of every series
  it writes `step`, whatever the step counts, so these are written here, in the same TSV format.
dvc.yaml declares each of loss.tsv, lr.tsv, grad_norm/ and epoch/ as a plot output with its own x
field, so each always exists: a header-only loss.tsv and lr.tsv for a run shorter than
`log_every`, an empty grad_norm/ when gradient norms were not logged. Everything goes into a
temporary directory that replaces the final one at the end, so a killed run never leaves half a
log under the name DVC tracks.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path

from dvclive import Live

from cnnlab.atomic import atomic_dir

STEP_COLUMN = "step"  # dvclive's x column: the x field of the per-step plots in dvc.yaml
EPOCH_COLUMN = "epoch"  # the x field of every per-epoch series and of their plots in dvc.yaml
STEP_SERIES = ("loss", "lr")  # logged together by log_step


class DvcLiveLogger:
    def __init__(self, live: Live):
        self.live = live
        self.series_dir = Path(live.plots_dir) / "metrics"

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.live.step = step
        self.live.log_metric("loss", loss)
        self.live.log_metric("lr", lr)  # the schedule as it was applied

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None:
        self.live.step = step
        for layer, value in norms.items():
            self.live.log_metric(f"grad_norm/{layer}", value)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """One row per metric file, `epoch<TAB>value`; `step` (the global step the epoch ended
        at) is not written: the per-step series already place every step."""
        for key, value in metrics.items():
            _append_row(self.series_dir / "epoch" / f"{key}.tsv", (EPOCH_COLUMN, key),
                        (epoch, value))

    def complete_outputs(self) -> None:
        """Make every plot output dvc.yaml declares exist, empty where nothing was logged."""
        for name in STEP_SERIES:
            tsv = self.series_dir / f"{name}.tsv"
            if not tsv.exists():
                _write_header(tsv, (STEP_COLUMN, name))
        (self.series_dir / "grad_norm").mkdir(parents=True, exist_ok=True)
        (self.series_dir / "epoch").mkdir(parents=True, exist_ok=True)


def _append_row(tsv: Path, header: tuple[str, str], row: tuple[int, float]) -> None:
    """Append one row to a TSV series, writing its header first when the file is new; the same
    dialect as dvclive's series (tab-separated, `\\n` line ends, floats as Python prints them)."""
    if not tsv.exists():
        _write_header(tsv, header)
    with open(tsv, "a", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerow(row)


def _write_header(tsv: Path, header: tuple[str, str]) -> None:
    tsv.parent.mkdir(parents=True, exist_ok=True)
    with open(tsv, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerow(header)


@contextlib.contextmanager
def training_log(out_dir: str | Path) -> Iterator[tuple[DvcLiveLogger, dict]]:
    """Yield (logger, summary); the summary dict is written to metrics.json beside the series."""
    with atomic_dir(out_dir) as tmp:
        # Stage outputs are declared in dvc.yaml; dvclive must not edit it or make DVC experiments.
        live = Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=False, report=None)
        summary: dict = {}
        logger = DvcLiveLogger(live)
        yield logger, summary
        logger.complete_outputs()
        live.summary = summary  # the run's own totals, not just the last logged values
        live.end()  # writes metrics.json
