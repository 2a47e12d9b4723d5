"""What the report and the comparisons read of each finished experiment: its metrics record, the
names its recipe gives, and where and how long it trained.

metrics/<exp>.json holds numbers only (cnnlab.evaluate.record), so the names (model, dataset,
eval split) come from params.yaml, and the wall time and device from the train summary
(metrics/<exp>/train/metrics.json), whose timings differ from run to run."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnnlab import paths
from cnnlab.config import Params
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.record import MetricsRecord


@dataclass(frozen=True)
class Result:
    """One experiment as the report shows it."""

    record: MetricsRecord  # metrics/<exp>.json
    model: str  # the recipe's names, from params.yaml
    dataset: str
    split: str  # the eval split
    train_seconds: float  # from the train summary: the training loop's wall time
    device: str  # ... and the device it trained on


@dataclass(frozen=True)
class TrainRun:
    """The train summary's wall time and device."""

    train_seconds: float
    device: str


def read_train_run(exp: str) -> TrainRun:
    """metrics/<exp>/train/metrics.json's train_seconds and device; anything else is one line
    naming the file and the stage that writes it."""
    path, stage = paths.train_summary(exp), f"train@{exp}"
    if not path.is_file():
        raise CnnlabError(f"{path} not found (run `dvc repro {stage}` first)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path} is not valid JSON ({exc}); re-run "
                          f"`dvc repro -f {stage}`") from exc
    seconds = summary.get("train_seconds") if isinstance(summary, dict) else None
    device = summary.get("device") if isinstance(summary, dict) else None
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or seconds < 0):
        raise CnnlabError(f"{path} lacks train_seconds as a number; re-run "
                          f"`dvc repro -f {stage}`")
    if not isinstance(device, str):
        raise CnnlabError(f"{path} lacks device as a name; re-run `dvc repro -f {stage}`")
    return TrainRun(float(seconds), device)


def load_results(params: Params, experiments: Sequence[str]) -> dict[str, Result]:
    """Each experiment's Result. An experiment params.yaml lacks fails first, listing the known
    ones; then every missing metrics file is named in one line; then the first unreadable file."""
    recipes = {exp: params.experiment(exp) for exp in experiments}  # an unknown name fails here
    missing = [exp for exp in experiments if not paths.metrics_file(exp).is_file()]
    if missing:
        files = ", ".join(str(paths.metrics_file(exp)) for exp in missing)
        targets = " ".join(f"evaluate@{exp}" for exp in missing)
        raise CnnlabError(f"{files} not found (run `dvc repro {targets}` first)")
    results = {}
    for exp in experiments:
        recipe = recipes[exp]
        record = MetricsRecord.read(paths.metrics_file(exp), exp)
        run = read_train_run(exp)
        results[exp] = Result(record, recipe.model, recipe.dataset, recipe.eval_split,
                              run.train_seconds, run.device)
    return results
