"""The evaluate@<exp> stage: score a trained experiment into metrics/<exp>.json (a MetricsRecord),
its provenance, its predictions (the confusion matrix `dvc plots` draws) and its classification
report."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping

import torch
from torch import nn

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import Experiment, Params
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import Split, load_prepared
from cnnlab.data.selection import ExperimentData, select_data
from cnnlab.devices import describe_device, hold_device
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.metrics import classification_metrics, classification_report_rows
from cnnlab.evaluate.provenance import provenance, write_provenance
from cnnlab.evaluate.record import BestEpoch, MetricsRecord
from cnnlab.evaluate.scoring import Predictions, predict, predictions_table
from cnnlab.models import count_params
from cnnlab.models.checkpoints import load_model
from cnnlab.text_tables import to_csv, to_markdown


def evaluate_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    device = hold_device(exp.device)  # a free GPU of its own under `dvc queue start -j N`
    data = select_data(exp, load_prepared(paths.prepared_dir(exp.dataset)))
    trained = _train_summary(name)
    model = load_model(exp, name, len(data.classes), paths.model_checkpoint(name), device)
    split = data.split(exp.eval_split)
    preds = predict(model, DeviceSplit(split, device), exp)
    scores = classification_metrics(split.labels, preds.predicted, data.classes)
    record = MetricsRecord(
        accuracy=scores.accuracy,
        precision_macro=scores.precision_macro,
        recall_macro=scores.recall_macro,
        f1_macro=scores.f1_macro,
        per_class=scores.per_class,
        split_accuracy=_accuracies(model, data, exp, device),
        params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        # No timings: with the same params this file is bit-identical from run to run on the
        # CPU. Wall times live in the train summary (paths.train_summary), which the report reads.
        epochs=trained["epochs"],
        train_images=trained["train_images"],
        eval_images=len(split),
        seed=exp.seed,
        best=_best_epoch(exp, name, data, device, trained),
        augmented_accuracy=_augmented_accuracy(model, split, exp, device),
    )
    _write_eval_outputs(name, data.classes, preds,
                        provenance(exp, describe_device(device), trained))
    record.write(paths.metrics_file(name))
    extra = "".join(f", {s} accuracy {a:.4f}" for s, a in record.split_accuracy.items())
    if record.augmented_accuracy is not None:
        extra += f", augmented {exp.eval_split} accuracy {record.augmented_accuracy:.4f}"
    print(f"{name}: {exp.eval_split} accuracy {record.accuracy:.4f}, "
          f"macro F1 {record.f1_macro:.4f} on {len(split)} images{extra}")


def _train_summary(name: str) -> dict[str, object]:
    """What train@<name> wrote about its run; both it and the weights must be there."""
    checkpoint, summary = paths.model_checkpoint(name), paths.train_summary(name)
    if not checkpoint.is_file() or not summary.is_file():
        raise CnnlabError(f"no trained model for {name!r} at {checkpoint} "
                          f"(run `dvc repro train@{name}` first)")
    return json.loads(summary.read_text(encoding="utf-8"))


def _best_epoch(exp: Experiment, name: str, data: ExperimentData, device: torch.device,
                trained: Mapping[str, object]) -> BestEpoch | None:
    """keep_best: the best epoch's checkpoint, scored like the final one."""
    best_file = paths.best_checkpoint(name)
    if not exp.keep_best or not best_file.is_file():
        return None
    model = load_model(exp, name, len(data.classes), best_file, device)
    split = data.split(exp.eval_split)
    preds = predict(model, DeviceSplit(split, device), exp)
    scores = classification_metrics(split.labels, preds.predicted, data.classes)
    return BestEpoch(epoch=trained["best_epoch"], accuracy=scores.accuracy,
                     f1_macro=scores.f1_macro,
                     split_accuracy=_accuracies(model, data, exp, device))


def _augmented_accuracy(model: nn.Module, split: Split, exp: Experiment,
                        device: torch.device) -> float | None:
    """score_augmented: the eval split through the training augmentation, drawn from a
    generator seeded with the experiment's seed, so the number is reproducible."""
    if not exp.score_augmented:
        return None
    gen = torch.Generator(device=device).manual_seed(exp.seed)
    return predict(model, DeviceSplit(split, device), exp, augment=gen).accuracy


def _accuracies(model: nn.Module, data: ExperimentData, exp: Experiment,
                device: torch.device) -> dict[str, float]:
    """Accuracy on each also_evaluate split, e.g. train (study 002) or val (study 004)."""
    return {split: predict(model, DeviceSplit(data.split(split), device), exp).accuracy
            for split in exp.also_evaluate}


def _write_eval_outputs(name: str, classes: tuple[str, ...], preds: Predictions,
                        info: Mapping[str, object]) -> None:
    """Predictions and the classification report, which the figures stage draws from, and the
    provenance, all replacing metrics/<exp>/eval/ at once."""
    rows = predictions_table(preds, classes)
    report = classification_report_rows(preds.labels, preds.predicted, classes)
    with atomic_dir(paths.eval_dir(name)) as out:
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "classification_report.csv").write_text(to_csv(report), encoding="utf-8")
        (out / "classification_report.md").write_text(to_markdown(_rounded(report)),
                                                      encoding="utf-8")
        write_provenance(out, info)


def _rounded(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
