"""Side-by-side tables of experiments, computed from their saved metrics and logs only."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import Params
from cnnlab.errors import CnnlabError
from cnnlab.report.figures import grad_norms_figure, loss_curves_figure
from cnnlab.report.studies import REPORTED
from cnnlab.text_tables import to_csv, to_markdown


def read_series(tsv: Path, column: str) -> tuple[list[int], list[float]]:
    """One dvclive series (step, value); empty when the run never logged it."""
    if not tsv.is_file():
        return [], []
    with open(tsv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]


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


def comparison_rows(experiments: Sequence[str]) -> list[dict[str, object]]:
    rows = []
    for exp in experiments:
        m = json.loads(paths.metrics_file(exp).read_text(encoding="utf-8"))
        train = json.loads(paths.train_summary(exp).read_text(encoding="utf-8"))
        reported = REPORTED.get(exp, {})
        norms = grad_norm_means(exp)
        rows.append({
            "experiment": exp,
            "params": m["params"],
            f"{m['split']}_accuracy": round(m["accuracy"], 4),
            "train_accuracy": round(m["train_accuracy"], 4) if "train_accuracy" in m else None,
            "f1_macro": round(m["f1_macro"], 4),
            "epochs": m["epochs"],
            "train_seconds": round(train["train_seconds"], 1),
            "first_layer_grad_norm": round(next(iter(norms.values())), 6) if norms else None,
            "study_val_accuracy": reported.get("val_accuracy"),
            "study_train_accuracy": reported.get("train_accuracy"),
        })
    return rows


def compare_experiments(params: Params, name: str, experiments: list[str]) -> None:
    """Tables (Markdown, CSV) and overlay figures for a group of finished experiments."""
    for exp in experiments:
        params.experiment(exp)  # an unknown name fails here, listing the known ones
        if not paths.metrics_file(exp).is_file():
            raise CnnlabError(f"{paths.metrics_file(exp)} not found "
                              f"(run `dvc repro evaluate@{exp}` first)")
    rows = comparison_rows(experiments)
    every = params.experiment(experiments[0]).log_every
    with atomic_dir(paths.comparison_dir(name)) as out:
        (out / "table.md").write_text(to_markdown(rows), encoding="utf-8")
        (out / "table.csv").write_text(to_csv(rows), encoding="utf-8")
        losses = {exp: read_series(paths.loss_series(exp), "loss") for exp in experiments}
        loss_curves_figure(losses, out / "loss_curves.png", f"{name}: training loss", every)
        norms = {exp: grad_norm_means(exp) for exp in experiments}
        if any(norms.values()):
            grad_norms_figure(norms, out / "grad_norms.png", f"{name}: gradient norm per layer")
    print(to_markdown(rows))
