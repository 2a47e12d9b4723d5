"""Classification metrics as pure functions of labels and predictions (no I/O, no plotting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassScores:
    """How well one set of predictions matches the labels, over every class of the dataset."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    per_class: Mapping[str, float]  # accuracy (recall) by class name, in label order


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> ClassScores:
    """Accuracy, macro precision/recall/F1 and per-class accuracy (recall) keyed by class name.
    A class absent from y_true scores 0 and still counts in the macro averages."""
    labels = np.arange(len(classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    support = matrix.sum(axis=1)
    per_class = np.divide(np.diag(matrix), support, out=np.zeros(len(classes)), where=support > 0)
    return ClassScores(
        accuracy=float(accuracy_score(y_true, y_pred)),
        precision_macro=float(precision),
        recall_macro=float(recall),
        f1_macro=float(f1),
        per_class={name: float(acc) for name, acc in zip(classes, per_class, strict=True)},
    )


def classification_report_rows(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]
) -> list[dict[str, object]]:
    """Per-class precision, recall, F1 and support, then the macro and weighted averages."""
    labels = np.arange(len(classes))
    rows = []
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    for i, name in enumerate(classes):
        rows.append({"class": name, "precision": float(precision[i]), "recall": float(recall[i]),
                     "f1": float(f1[i]), "support": int(support[i])})
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        rows.append({"class": f"{average} avg", "precision": float(p), "recall": float(r),
                     "f1": float(f), "support": int(support.sum())})
    return rows
