"""The evaluate@<exp> stage: score a trained experiment into metrics/<exp>.json, its
predictions (the confusion matrix `dvc plots` draws) and its classification report."""

from __future__ import annotations

import csv
import dataclasses
import json

from cnnlab import paths
from cnnlab.atomic import atomic_dir, write_text
from cnnlab.config import Experiment, Params
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import load_prepared
from cnnlab.data.selection import select_data
from cnnlab.devices import describe_device, resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.metrics import classification_metrics, classification_report_rows
from cnnlab.evaluate.provenance import run_info
from cnnlab.evaluate.scoring import Predictions, predict, predictions_table
from cnnlab.models import count_params
from cnnlab.models.checkpoints import load_model
from cnnlab.text_tables import to_csv, to_markdown


def evaluate_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    device = resolve_device(exp.device)
    data = select_data(exp, load_prepared(paths.prepared_dir(exp.dataset)))
    checkpoint = paths.model_checkpoint(name)
    train_summary_file = paths.train_summary(name)
    if not checkpoint.is_file() or not train_summary_file.is_file():
        raise CnnlabError(f"no trained model for {name!r} at {checkpoint} "
                          f"(run `dvc repro train@{name}` first)")
    train_summary = json.loads(train_summary_file.read_text(encoding="utf-8"))
    model = load_model(exp, name, len(data.classes), checkpoint, device)
    split = data.split(exp.eval_split)
    preds = predict(model, DeviceSplit(split, device), exp)

    record = classification_metrics(split.labels, preds.predicted, data.classes)
    record.update(_accuracies(model, data, exp, device))
    best_file = paths.best_checkpoint(name)
    if exp.keep_best and best_file.is_file():
        best_model = load_model(exp, name, len(data.classes), best_file, device)
        best_preds = predict(best_model, DeviceSplit(split, device), exp)
        best = classification_metrics(split.labels, best_preds.predicted, data.classes)
        record["best"] = {"epoch": train_summary["best_epoch"], "accuracy": best["accuracy"],
                          "f1_macro": best["f1_macro"],
                          **_accuracies(best_model, data, exp, device)}
    record.update(
        params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        # No timings: with the same params this file is bit-identical from run to run on the
        # CPU. Wall times live in the train summary (paths.train_summary), which the report reads.
        epochs=train_summary["epochs"],
        train_images=train_summary["train_images"],
        dataset=exp.dataset,
        split=exp.eval_split,
        eval_images=len(split),
        model=exp.model,
        seed=exp.seed,
        optimizer=dataclasses.asdict(exp.optimizer),  # with the preset's defaults filled in
        **run_info(describe_device(device)),
    )
    _write_eval_outputs(name, data.classes, preds)
    write_text(paths.metrics_file(name), json.dumps(record, indent=2) + "\n")
    extra = "".join(f", {s} accuracy {record[f'{s}_accuracy']:.4f}" for s in exp.also_evaluate)
    print(f"{name}: {exp.eval_split} accuracy {record['accuracy']:.4f}, "
          f"macro F1 {record['f1_macro']:.4f} on {len(split)} images{extra}")


def _accuracies(model, data, exp: Experiment, device) -> dict[str, float]:
    """Accuracy on each also_evaluate split, e.g. train (study 002) or val (study 004)."""
    out = {}
    for split_name in exp.also_evaluate:
        split = data.split(split_name)
        out[f"{split_name}_accuracy"] = predict(model, DeviceSplit(split, device), exp).accuracy
    return out


def _write_eval_outputs(name: str, classes: tuple[str, ...], preds: Predictions) -> None:
    """Predictions and the classification report; the figures stage draws from these."""
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


def _rounded(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
