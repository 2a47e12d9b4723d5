"""What the report and the comparisons read of each finished experiment: its metrics record, the
recipe it ran with, and where and how long it trained.

metrics/<exp>.json holds numbers only (cnnlab.evaluate.record), so the names (model, dataset,
eval split) and the rest of the recipe (weights, data fractions, the profile's caps) come from
params.yaml, and the wall time, device and last epoch's training accuracy from the train summary
(metrics/<exp>/train/metrics.json), whose timings differ from run to run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnnlab import paths
from cnnlab.config import Experiment, Params
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.record import MetricsRecord, read_stage_json


@dataclass(frozen=True)
class Result:
    """One experiment as the report shows it."""

    record: MetricsRecord  # metrics/<exp>.json
    model: str  # the recipe's names, from params.yaml
    dataset: str
    split: str  # the eval split
    train_seconds: float  # from the train summary: the training loop's wall time
    device: str  # ... and the device it trained on
    recipe: Experiment  # params.experiment(exp): its recipe with the profile's caps applied
    # The train summary's last epoch: accuracy over that epoch's training batches as they were
    # trained on (dropout on, augmented), what Keras' fit() reports as `accuracy`. None when the
    # summary predates it.
    last_epoch_train_accuracy: float | None = None
    profile_caps: tuple[str, ...] = ()  # profile settings that changed the recipe, "max_epochs=1"


@dataclass(frozen=True)
class TrainRun:
    """The train summary's wall time, device and last epoch's training accuracy."""

    train_seconds: float
    device: str
    train_accuracy: float | None = None


def _is_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value))


def read_train_run(exp: str) -> TrainRun:
    """metrics/<exp>/train/metrics.json's train_seconds, device and train_accuracy (the last
    epoch's, optional); anything else is one line naming the file and the stage that writes it."""
    path, stage = paths.train_summary(exp), f"train@{exp}"
    summary = read_stage_json(path, stage)
    seconds = summary.get("train_seconds") if isinstance(summary, dict) else None
    device = summary.get("device") if isinstance(summary, dict) else None
    if not _is_number(seconds) or seconds < 0:
        raise CnnlabError(f"{path} lacks train_seconds as a number; re-run "
                          f"`dvc repro -f {stage}`")
    if not isinstance(device, str):
        raise CnnlabError(f"{path} lacks device as a name; re-run `dvc repro -f {stage}`")
    accuracy = summary.get("train_accuracy")
    if accuracy is not None and not (_is_number(accuracy) and 0 <= accuracy <= 1):
        raise CnnlabError(f"{path} has train_accuracy {accuracy!r}, not a fraction in [0, 1]; "
                          f"re-run `dvc repro -f {stage}`")
    return TrainRun(float(seconds), device, None if accuracy is None else float(accuracy))


def profile_caps(params: Params, exp: str) -> tuple[str, ...]:
    """The profile settings that changed experiment `exp`'s recipe, e.g. ("max_epochs=1",)."""
    given, capped = params.all_experiments()[exp], params.experiment(exp)
    changed = (("max_epochs", given.epochs != capped.epochs),
               ("max_train_images", given.train_subset != capped.train_subset),
               ("max_eval_images", given.eval_subset != capped.eval_subset))
    return tuple(f"{key}={getattr(params.profile, key)}" for key, differs in changed if differs)


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
                              run.train_seconds, run.device, recipe, run.train_accuracy,
                              profile_caps(params, exp))
    return results
