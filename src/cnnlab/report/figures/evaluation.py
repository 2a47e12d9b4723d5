"""Figures of a model's predictions on its eval split: confusion, per-class scores, examples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from cnnlab.report.figure_data import row_normalized
from cnnlab.report.figures._grid import image_grid
from cnnlab.report.figures._save import RIGHT, WRONG, message, new_figure, save, set_title, styled


def _bar_height(n: int) -> float:
    return max(2.5, 1.2 + 0.35 * n)


@styled
def confusion_figure(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str,
                     normalize: bool = False) -> Path:
    """Heatmap with each cell labelled; rows are true classes, columns predicted ones.

    normalize=False labels counts; True divides each row by its total (a row reads as the
    fractions of that class predicted as each class, the diagonal as its recall).
    Size: max(4.5, 2.2 + 0.6 n) x max(3.5, 1.6 + 0.5 n) inches for n classes.
    """
    n = len(classes)
    matrix = np.asarray(matrix)
    values = row_normalized(matrix) if normalize else matrix
    width = max(4.5, 2.2 + 0.6 * n)
    fig = new_figure(width, max(3.5, 1.6 + 0.5 * n))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true")
    set_title(ax, title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = (values.max() / 2) if values.size else 0
    for i in range(n):
        for j in range(n):
            text = f"{values[i, j]:.2f}" if normalize else str(values[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=8 if n <= 12 else 6,
                    color="white" if values[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax, shrink=0.8,
                 label="fraction of the true class" if normalize else "images")
    return save(fig, path)


@styled
def classification_report_figure(rows: Sequence[Mapping[str, object]], path: str | Path,
                                 title: str) -> Path:
    """Precision, recall and F1 per class (coloured 0 to 1) and its support, as a table.

    `rows` are cnnlab.evaluate.metrics.classification_report_rows: one per class, then the averages.
    Size: 6 x max(2.5, 1.3 + 0.32 rows) inches.
    """
    metrics = ("precision", "recall", "f1")
    names = [str(row["class"]) for row in rows]
    values = np.array([[float(row[m]) for m in metrics] + [np.nan] for row in rows]).reshape(-1, 4)
    fig = new_figure(6, max(2.5, 1.3 + 0.32 * len(rows)))
    ax = fig.subplots()
    cmap = colormaps["RdYlGn"].with_extremes(bad="whitesmoke")  # support: counts, not scores
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(rows):
        for j in range(len(metrics)):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.text(3, i, f"{int(row['support']):,}", ha="center", va="center", fontsize=8)
    averages = [i for i, name in enumerate(names) if name.endswith("avg")]
    if averages:  # set the averages apart from the classes
        ax.axhline(averages[0] - 0.5, color="black", linewidth=1.5)
    ax.set_xticks(range(4), [*metrics, "support"])
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), names)
    ax.tick_params(length=0)
    set_title(ax, title)
    if not rows:
        message(ax, "no classes")
    return save(fig, path)


@styled
def per_class_accuracy_figure(accuracy: Mapping[str, float], path: str | Path,
                              title: str) -> Path:
    """Each class's accuracy (its recall) as horizontal bars, best at the top, with their mean.

    Size: 6 x max(2.5, 1.2 + 0.35 n) inches.
    """
    ranked = sorted(accuracy.items(), key=lambda kv: (-kv[1], kv[0]))
    fig = new_figure(6, _bar_height(len(ranked)))
    ax = fig.subplots()
    names = [name for name, _ in ranked]
    scores = [score for _, score in ranked]
    bars = ax.barh(range(len(ranked)), scores, color="tab:blue")
    ax.bar_label(bars, labels=[f"{s:.1%}" for s in scores], fontsize=8, padding=2)
    if scores:
        mean = float(np.mean(scores))
        ax.axvline(mean, color="gray", linestyle="--", linewidth=1, label=f"mean {mean:.1%}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_yticks(range(len(ranked)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.12), xlabel="accuracy (fraction of the class predicted right)")
    set_title(ax, title)
    return save(fig, path)


@styled
def most_confused_figure(pairs: Sequence[tuple[str, str, int]], path: str | Path,
                         title: str) -> Path:
    """The most frequent mistakes, (true, predicted, count), as bars labelled "true → predicted".

    Size: 6 x max(2.5, 1.2 + 0.35 k) inches for k pairs.
    """
    fig = new_figure(6, _bar_height(len(pairs)))
    ax = fig.subplots()
    counts = [count for _, _, count in pairs]
    bars = ax.barh(range(len(pairs)), counts, color="tab:red")
    ax.bar_label(bars, fontsize=8, padding=2)
    ax.set_yticks(range(len(pairs)), [f"{t} → {p}" for t, p, _ in pairs])
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set(xlabel="images")
    set_title(ax, title)
    if not pairs:
        message(ax, "no misclassified images")
    return save(fig, path)


@styled
def predictions_figure(images: Sequence[np.ndarray], true: Sequence[str],
                       predicted: Sequence[str], confidence: Sequence[float],
                       path: str | Path, title: str, columns: int = 4) -> Path:
    """Example images captioned T (true) / P (predicted, with its probability), green when
    right and red when wrong."""
    captions = [f"T: {t}\nP: {p} ({c:.0%})"
                for t, p, c in zip(true, predicted, confidence, strict=True)]
    colors = [RIGHT if t == p else WRONG for t, p in zip(true, predicted, strict=True)]
    return image_grid(images, captions, path, title, columns, colors=colors,
                      empty="no such predictions")
