"""Every figure function draws a PNG of the size its inputs fix, byte-identical for the same
inputs; the helpers in cnnlab.report.figure_data compute what the figures show."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from cnnlab.config import Normalize
from cnnlab.data.augment import normalize
from cnnlab.report import figures
from cnnlab.report.figure_data import (
    COMMON_VIEWS,
    best_point,
    class_counts,
    confusion_counts,
    filters_as_images,
    first_index_per_class,
    first_indices,
    first_where,
    most_confused_pairs,
    row_normalized,
    sample_indices,
    study_views,
    to_display,
)
from cnnlab.report.figures._save import MARK
from cnnlab.report.studies import STUDIES

# A layout that does not fit (a label clipped, axes collapsed) is a matplotlib warning: fail on it.
pytestmark = pytest.mark.filterwarnings("error")

CLASSES = ["cat", "dog", "motorcycle"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images(n: int, size: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return list(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


REPORT = [{"class": c, "precision": 0.5, "recall": 0.75, "f1": 0.6, "support": 4} for c in CLASSES]
REPORT += [{"class": f"{avg} avg", "precision": 0.5, "recall": 0.75, "f1": 0.6, "support": 12}
           for avg in ("macro", "weighted")]
SERIES = {"train": ([1, 2, 3], [1.2, 0.9, 0.7]), "test": ([1, 2, 3], [1.3, 1.1, 1.0])}

# name -> (draw(path), expected (width, height) in pixels at 100 dpi)
CASES = {
    "samples_per_class": (lambda p: figures.samples_per_class_figure(
        [*images(2), None], CLASSES, p, "one per class"), (450, 235)),
    "class_distribution": (lambda p: figures.class_distribution_figure(
        {"train": [5, 3, 4], "test": [2, 1, 2]}, CLASSES, p, "distribution"), (600, 450)),
    "augmentation": (lambda p: figures.augmentation_figure(
        images(1)[0], images(5), p, "augmentation demo"), (900, 235)),
    "input_batch": (lambda p: figures.input_batch_figure(
        images(4), ["cat", "dog", "cat", "motorcycle"], p, "first batch"), (600, 235)),
    "loss": (lambda p: figures.loss_figure([100, 200], [2.3, 1.9], p, "loss", every=100),
             (700, 400)),
    "loss_empty": (lambda p: figures.loss_figure([], [], p, "short run", every=100), (700, 400)),
    "loss_curves": (lambda p: figures.loss_curves_figure(
        {"a": ([100, 200], [2.3, 1.9]), "b": ([100, 200], [2.2, 2.0])}, p, "runs", 100),
        (700, 400)),
    "epoch": (lambda p: figures.epoch_figure(SERIES, p, "loss per epoch", "loss"), (700, 400)),
    "epoch_accuracy": (lambda p: figures.epoch_figure(
        {"train": ([1], [0.4])}, p, "accuracy", "accuracy", ylim=(0, 1)), (700, 400)),
    "epoch_marked": (lambda p: figures.epoch_figure(
        SERIES, p, "accuracy, best marked", "accuracy", ylim=(0, 1.5),
        mark=(1, 1.3, "best test accuracy 130.00%\nat epoch 1")), (700, 400)),
    "labelled_images": (lambda p: figures.labelled_images_figure(
        images(5), ["frog", "truck", "truck", "deer", "automobile"], p, "first 5"), (750, 235)),
    "lr": (lambda p: figures.lr_figure([10, 20, 30], [1e-3, 5e-4, 1e-4], p, "lr"), (700, 400)),
    "grad_norm_steps": (lambda p: figures.grad_norm_steps_figure(
        {f"conv{i}": ([5, 10], [10.0 ** -i, 2 * 10.0 ** -i]) for i in range(1, 13)}, p,
        "gradient norms"), (800, 450)),
    "grad_norms": (lambda p: figures.grad_norms_figure(
        {"net1": {"conv1": 0.01, "fc1": 0.2}, "net2": {"conv1": 0.001, "fc1": 0.3}}, p,
        "mean gradient norms"), (800, 450)),
    "confusion": (lambda p: figures.confusion_figure(
        np.array([[5, 1, 0], [2, 7, 1], [0, 0, 3]]), CLASSES, p, "counts"), (450, 350)),
    "confusion_normalized": (lambda p: figures.confusion_figure(
        np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]]), CLASSES, p, "rows", normalize=True),
        (450, 350)),
    "classification_report": (lambda p: figures.classification_report_figure(
        REPORT, p, "report"), (600, 290)),
    "per_class_accuracy": (lambda p: figures.per_class_accuracy_figure(
        {"cat": 0.5, "dog": 0.9, "motorcycle": 0.7}, p, "per class"), (600, 250)),
    "most_confused": (lambda p: figures.most_confused_figure(
        [("dog", "cat", 5), ("cat", "dog", 2)], p, "confused"), (600, 250)),
    "most_confused_none": (lambda p: figures.most_confused_figure([], p, "none"), (600, 250)),
    "predictions": (lambda p: figures.predictions_figure(
        images(3), ["cat", "dog", "cat"], ["cat", "cat", "cat"], [0.9, 0.55, 0.999], p,
        "predictions"), (450, 235)),
    "predictions_none": (lambda p: figures.predictions_figure([], [], [], [], p, "none"),
                         (400, 235)),
    "filters": (lambda p: figures.filters_figure(
        np.random.default_rng(0).normal(size=(5, 3, 3, 3)), p, "filters"), (450, 165)),
    "feature_maps": (lambda p: figures.feature_maps_figure(
        images(1)[0], {"conv1": np.ones((4, 8, 8)), "conv2": np.arange(6 * 16.0).reshape(6, 4, 4)},
        p, "feature maps"), (910, 290)),
}


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", CASES)
def test_figure_is_a_png_of_its_size_and_the_same_inputs_give_the_same_bytes(tmp_path, name):
    draw, size = CASES[name]
    first = draw(tmp_path / "a.png")
    draw(tmp_path / "b.png")
    assert first == tmp_path / "a.png"
    data = first.read_bytes()
    assert png_size(data) == size and len(data) > 2000
    assert data == (tmp_path / "b.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp files


def test_figures_ignore_the_users_matplotlib_settings(tmp_path):
    import matplotlib

    draw, _ = CASES["confusion"]
    draw(tmp_path / "default.png")
    with matplotlib.rc_context({"font.size": 20, "axes.facecolor": "black"}):
        draw(tmp_path / "changed_rc.png")
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "changed_rc.png").read_bytes()


def test_a_long_title_is_wrapped_not_clipped(tmp_path):
    title = "a title far longer than the figure is wide, " * 4
    figures.most_confused_figure([("dog", "cat", 5)], tmp_path / "long.png", title)
    assert png_size((tmp_path / "long.png").read_bytes()) == (600, 250)


def test_most_confused_pairs_are_off_diagonal_largest_first_ties_in_row_order():
    matrix = np.array([[9, 3, 0], [3, 8, 1], [5, 0, 7]])
    assert most_confused_pairs(matrix, CLASSES, 3) == [
        ("motorcycle", "cat", 5), ("cat", "dog", 3), ("dog", "cat", 3)]
    assert most_confused_pairs(np.eye(3, dtype=int), CLASSES, 3) == []


def test_row_normalized_keeps_empty_rows_at_zero():
    out = row_normalized(np.array([[3, 1], [0, 0]]))
    assert out.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_first_index_and_counts_per_class():
    labels = np.array([2, 0, 2, 0])
    assert first_index_per_class(labels, 3) == [1, None, 0]
    assert class_counts(labels, 3) == [2, 0, 2]


def test_sample_indices_are_seeded_sorted_and_from_the_mask():
    mask = np.arange(100) % 3 == 0
    picked = sample_indices(mask, 8, seed=0)
    assert picked == sample_indices(mask, 8, seed=0) != sample_indices(mask, 8, seed=1)
    assert picked == sorted(picked) and len(picked) == 8 and all(i % 3 == 0 for i in picked)
    assert sample_indices(np.array([False, True]), 8, seed=0) == [1]


def test_filters_are_scaled_each_to_0_1_and_limited():
    weights = np.random.default_rng(0).normal(size=(70, 3, 5, 5))
    tiles = filters_as_images(weights, limit=64)
    assert tiles.shape == (64, 5, 5, 3)
    assert np.allclose(tiles.min(axis=(1, 2, 3)), 0) and np.allclose(tiles.max(axis=(1, 2, 3)), 1)
    assert filters_as_images(np.zeros((2, 16, 3, 3))).shape == (2, 3, 3, 3)  # grey, flat


def test_to_display_undoes_normalize():
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4),
                                                                 dtype=np.uint8))
    norm = Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    shown = to_display(normalize(pixels, norm).numpy(), norm.mean, norm.std)
    assert shown.dtype == np.uint8 and np.array_equal(shown, pixels.permute(0, 2, 3, 1).numpy())


def test_first_n_selections_take_the_first_in_order():
    assert first_indices(100, 8) == list(range(8)) and first_indices(3, 8) == [0, 1, 2]
    true = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    predicted = np.array([0, 2, 2, 1, 1, 0, 0, 0, 2, 0])  # right at 0, 2, 4, 6, 8, 9
    right = true == predicted
    assert first_where(right, 3) == [0, 2, 4]
    assert first_where(~right, 3) == [1, 3, 5]
    assert first_where(~right, 10) == [1, 3, 5, 7]  # fewer than asked: all there are
    assert first_where(np.zeros(4, dtype=bool), 3) == []


def test_best_point_is_the_first_maximum():
    assert best_point([1, 2, 3, 4], [0.5, 0.9, 0.7, 0.9]) == (2, 0.9)  # a tie keeps the earlier
    assert best_point([1], [0.25]) == (1, 0.25)
    assert best_point([], []) is None


def test_each_study_draws_what_it_showed():
    """000: the first 16 conv1 filters; 003: the best epoch marked and the first 8 test
    predictions; 004: the first 5 training images and the first 3 correct and incorrect; any
    other experiment the common set (64 filters, nothing more)."""
    views = {exp: study_views(exp) for group in STUDIES.values() for exp in group}
    assert {views[exp].filters for exp in STUDIES["000"]} == {16}
    assert views["deepcnn"].mark_best_epoch and views["deepcnn"].first_predictions == 8
    for exp in STUDIES["004"]:
        assert (views[exp].first_train_images, views[exp].first_each_outcome) == (5, 3)
        assert list(views[exp].files()) == ["train_first_5.png", "correct_first_3.png",
                                            "incorrect_first_3.png"]
    for exp in (*STUDIES["001"], *STUDIES["002"]):
        assert views[exp] == COMMON_VIEWS
    assert study_views("cnn_seed1") == COMMON_VIEWS and COMMON_VIEWS.filters == 64
    assert list(views["deepcnn"].files()) == ["accuracy_epochs.png", "predictions_first_8.png"]


def mark_pixels(path) -> int:
    """Pixels of the mark's colour (the star and the annotation) in a PNG."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = np.array([int(MARK[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=-1) < 30).sum())


def test_the_best_epoch_mark_reaches_the_png(tmp_path):
    series = {"train": ([1, 2, 3], [0.3, 0.5, 0.6]), "test": ([1, 2, 3], [0.4, 0.7, 0.65])}
    plain = figures.epoch_figure(series, tmp_path / "plain.png", "acc", "accuracy", ylim=(0, 1))
    marked = figures.epoch_figure(series, tmp_path / "marked.png", "acc", "accuracy",
                                  ylim=(0, 1), mark=(2, 0.7, "best test accuracy 70.00%"))
    assert mark_pixels(plain) == 0 and mark_pixels(marked) > 200
    # Another best point (same text) draws another PNG: the star follows the point.
    moved = figures.epoch_figure(series, tmp_path / "moved.png", "acc", "accuracy",
                                 ylim=(0, 1), mark=(3, 0.65, "best test accuracy 70.00%"))
    assert moved.read_bytes() != marked.read_bytes()


# ------------------------------------------------------------ confusion matrix: rows are true


def test_confusion_counts_put_each_prediction_in_its_true_row_and_predicted_column():
    true = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 0, 0, 2])
    expected = np.array([[1, 1, 0],   # class 0: once right, once taken for 1
                         [0, 1, 0],
                         [2, 0, 1]])  # class 2: twice taken for 0
    assert np.array_equal(confusion_counts(true, predicted, 3), expected)
    from sklearn.metrics import confusion_matrix
    assert np.array_equal(expected, confusion_matrix(true, predicted, labels=range(3)))


def dark_centroid(path) -> tuple[float, float]:
    """(x, y) centroid of the figure's darkest blue pixels: a full cell (and the colorbar's
    top, the same in every drawing compared)."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    dark = (rgb[..., 2] > 80) & (rgb[..., 0] < 40) & (rgb[..., 1] < 80)
    ys, xs = np.nonzero(dark)
    return xs.mean(), ys.mean()


def test_the_confusion_figure_draws_true_classes_as_rows(tmp_path):
    """One image of class 1 taken for class 0 lands lower left of one of class 0 taken for 1:
    rows (top to bottom) are the true classes, columns (left to right) the predicted ones."""
    classes = ("cat", "dog")
    lower_left = figures.confusion_figure(confusion_counts(np.array([1]), np.array([0]), 2),
                                          classes, tmp_path / "a.png", "true dog, said cat")
    upper_right = figures.confusion_figure(confusion_counts(np.array([0]), np.array([1]), 2),
                                           classes, tmp_path / "b.png", "true cat, said dog")
    (ax, ay), (bx, by) = dark_centroid(lower_left), dark_centroid(upper_right)
    assert ax < bx and ay > by
