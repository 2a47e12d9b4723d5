"""The computing behind figures, as pure functions of arrays: which images, which cells, what
scale.

cnnlab.report.figures only draws and cnnlab.report.figure_sets only reads files; what lies
between (choosing examples with a fixed seed or the first n as a study did, ranking confusions,
finding the best epoch, turning weights and normalised tensors back into displayable pixels)
lives here, where it can be tested without drawing anything. STUDY_VIEWS says which figures each
study drew beyond the common set and how it chose their examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnlab.report.studies import STUDY_OF


def first_index_per_class(labels: np.ndarray, num_classes: int) -> list[int | None]:
    """The position of each class's first example in `labels`; None for a class with none."""
    firsts: list[int | None] = []
    for label in range(num_classes):
        hits = np.flatnonzero(labels == label)
        firsts.append(int(hits[0]) if len(hits) else None)
    return firsts


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(labels, minlength=num_classes)[:num_classes].tolist()


def sample_indices(mask: np.ndarray, k: int, seed: int) -> list[int]:
    """Up to k positions where `mask` is true, drawn without replacement with `seed`, sorted."""
    candidates = np.flatnonzero(mask)
    if len(candidates) <= k:
        return candidates.tolist()
    return np.sort(np.random.default_rng(seed).choice(candidates, size=k, replace=False)).tolist()


def row_normalized(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the recall view of a confusion matrix); empty rows stay 0."""
    matrix = np.asarray(matrix, dtype=float)
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


def most_confused_pairs(matrix: np.ndarray, classes: Sequence[str], k: int
                        ) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first.

    Cells with no mistakes are left out; ties keep row-major order, so the result is stable.
    """
    matrix = np.asarray(matrix)
    cells = [(int(matrix[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes))
             if i != j and matrix[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(classes[i], classes[j], count) for count, i, j in cells[:k]]


def filters_as_images(weights: np.ndarray, limit: int = 64) -> np.ndarray:
    """Conv weights (out, in, kh, kw) -> the first `limit` filters as (n, kh, kw, 3) in [0, 1].

    Each filter is min-max scaled on its own, so a weak filter is as visible as a strong one.
    Filters over other than 3 input channels are shown as grey (their mean over channels).
    """
    w = np.asarray(weights, dtype=np.float64)[:limit]
    w = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else np.repeat(
        w.mean(axis=1)[..., None], 3, axis=-1)
    low = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - low
    return np.divide(w - low, span, out=np.full_like(w, 0.5), where=span > 0)


def to_display(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images (B, C, H, W) -> uint8 (B, H, W, C): undo (x - mean) / std and /255."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    pixels = np.clip((x * s + m) * 255.0, 0, 255).round().astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


# -- what each study drew, and how it chose the examples ------------------------------------

@dataclass(frozen=True)
class StudyViews:
    """The figures one study drew beyond cnnlab's common set, and the examples it chose.

    A count of 0 leaves that figure out. Every choice is the first n in the split's order, as
    the studies took them (a test loader without shuffling, `indices[:n]`), never a random draw.
    """

    filters: int = 64  # first-layer filters shown: the first n
    mark_best_epoch: bool = False  # mark the best eval-split accuracy and its epoch on the curve
    first_predictions: int = 0  # the first n eval images with their predictions
    first_train_images: int = 0  # the first n training images with their labels
    first_each_outcome: int = 0  # the first n correct and the first n incorrect predictions

    def files(self) -> dict[str, str]:
        """The figure files that show what this study showed beyond the common set (file ->
        what it shows), for the report to link: all but accuracy_epochs.png exist only here."""
        files = {}
        if self.mark_best_epoch:
            files["accuracy_epochs.png"] = "accuracy per epoch, best epoch marked"
        if self.first_predictions:
            files[f"predictions_first_{self.first_predictions}.png"] = (
                f"first {self.first_predictions} predictions")
        if self.first_train_images:
            files[f"train_first_{self.first_train_images}.png"] = (
                f"first {self.first_train_images} training images")
        if self.first_each_outcome:
            n = self.first_each_outcome
            files[f"correct_first_{n}.png"] = f"first {n} correct"
            files[f"incorrect_first_{n}.png"] = f"first {n} incorrect"
        return files


COMMON_VIEWS = StudyViews()
STUDY_VIEWS: dict[str, StudyViews] = {
    "000": StudyViews(filters=16),  # "the first 16 filters" of conv1
    "003": StudyViews(mark_best_epoch=True, first_predictions=8),  # one test batch's first 8
    "004": StudyViews(first_train_images=5, first_each_outcome=3),  # X_train[:5]; [:3] of each
}


def study_views(experiment: str) -> StudyViews:
    """The views of the study `experiment` belongs to (cnnlab.report.studies.STUDY_OF); an
    experiment outside the studies gets the common set."""
    return STUDY_VIEWS.get(STUDY_OF.get(experiment, ""), COMMON_VIEWS)


def first_indices(n: int, k: int) -> list[int]:
    """The first k positions of n items (all n when there are fewer)."""
    return list(range(min(n, k)))


def first_where(mask: np.ndarray, k: int) -> list[int]:
    """The first k positions where `mask` is true, in order."""
    return np.flatnonzero(np.asarray(mask, dtype=bool))[:k].tolist()


def best_point(xs: Sequence[int], ys: Sequence[float]) -> tuple[int, float] | None:
    """(x, y) of the largest y, the first one on a tie (a later epoch must beat it, as keep_best
    and the study's `if test_acc > best_acc` choose); None for an empty series."""
    if not len(ys):
        return None
    i = int(np.argmax(np.asarray(ys, dtype=np.float64)))  # argmax returns the first maximum
    return int(xs[i]), float(ys[i])


def confusion_counts(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """The confusion matrix the figures draw: row i is true class i, column j predicted class
    j, so matrix[i, j] counts the images of class i predicted as j (sklearn's convention)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true), np.asarray(predicted)), 1)
    return matrix
