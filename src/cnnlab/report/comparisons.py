"""Side-by-side tables of experiments, computed from their saved metrics and logs only."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import Params
from cnnlab.report.figures import grad_norms_figure, loss_curves_figure
from cnnlab.report.results import Result, load_results
from cnnlab.report.studies import REPORTED
from cnnlab.text_tables import to_csv, to_markdown


def read_series(tsv: Path, column: str) -> tuple[list[int], list[float]]:
    """One training series (x, value): x is the `step` of per-step series, the `epoch` of
    per-epoch ones; empty when the run never logged it."""
    if not tsv.is_file():
        return [], []
    with open(tsv, encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
    x = "epoch" if "epoch" in (reader.fieldnames or ()) else "step"
    return [int(r[x]) for r in rows], [float(r[column]) for r in rows]


def grad_norm_means(experiment: str) -> dict[str, float]:
    """Mean gradient norm per layer over the run, in the model's layer order."""
    folder = paths.loss_series(experiment).parent / "grad_norm"
    means = {}
    for tsv in folder.glob("*.tsv"):
        _, values = read_series(tsv, tsv.stem)
        if values:
            means[tsv.stem] = sum(values) / len(values)
    return dict(sorted(means.items(), key=lambda kv: _layer_order(kv[0])))


def _layer_order(name: str) -> tuple[int, int]:
    """conv1 < conv2 < ... < conv12 < fc1 < fc2 (numeric, not string, order)."""
    kind = 0 if name.startswith("conv") else 1
    digits = "".join(c for c in name if c.isdigit())
    return kind, int(digits) if digits else 0


def comparison_rows(results: Mapping[str, Result],
                    grad_norms: Mapping[str, Mapping[str, float]]) -> list[dict[str, object]]:
    """One row per experiment, in the order given; `grad_norms` are each one's mean gradient
    norm per layer (grad_norm_means), empty when the run did not log them."""
    rows = []
    for exp, result in results.items():
        record, reported, norms = result.record, REPORTED.get(exp, {}), grad_norms[exp]
        train_accuracy = record.split_accuracy.get("train")
        rows.append({
            "experiment": exp,
            "params": record.params,
            f"{result.split}_accuracy": round(record.accuracy, 4),
            "train_accuracy": None if train_accuracy is None else round(train_accuracy, 4),
            "f1_macro": round(record.f1_macro, 4),
            "epochs": record.epochs,
            "train_seconds": round(result.train_seconds, 1),
            "first_layer_grad_norm": round(next(iter(norms.values())), 6) if norms else None,
            "study_val_accuracy": reported.get("val_accuracy"),
            "study_train_accuracy": reported.get("train_accuracy"),
        })
    return rows


def compare_experiments(params: Params, name: str, experiments: list[str]) -> None:
    """Tables (Markdown, CSV) and overlay figures for a group of finished experiments."""
    # An unknown name fails here listing the known ones; a missing file names its stage.
    results = load_results(params, experiments)
    norms = {exp: grad_norm_means(exp) for exp in experiments}
    rows = comparison_rows(results, norms)
    every = params.experiment(experiments[0]).log_every
    with atomic_dir(paths.comparison_dir(name)) as out:
        (out / "table.md").write_text(to_markdown(rows), encoding="utf-8")
        (out / "table.csv").write_text(to_csv(rows), encoding="utf-8")
        losses = {exp: read_series(paths.loss_series(exp), "loss") for exp in experiments}
        loss_curves_figure(losses, out / "loss_curves.png", f"{name}: training loss", every)
        if any(norms.values()):
            grad_norms_figure(norms, out / "grad_norms.png", f"{name}: gradient norm per layer")
    print(to_markdown(rows))
