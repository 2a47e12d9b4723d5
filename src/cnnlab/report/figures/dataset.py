"""Figures of the data: samples per class, class balance, augmentation, what the model is fed.

Images are uint8 (H, W, 3) arrays; callers pick them and run any augmentation themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from cnnlab.report.figures._grid import image_grid
from cnnlab.report.figures._save import new_figure, save, set_title, styled


@styled
def samples_per_class_figure(images: Sequence[np.ndarray | None], classes: Sequence[str],
                             path: str | Path, title: str, columns: int = 5) -> Path:
    """One image per class, captioned with the class name and index (None: the class is empty)."""
    captions = [f"{name} ({i})" for i, name in enumerate(classes)]
    return image_grid(images, captions, path, title, columns)


@styled
def labelled_images_figure(images: Sequence[np.ndarray], labels: Sequence[str], path: str | Path,
                           title: str, columns: int = 5) -> Path:
    """Images in the order given, each captioned with its label (e.g. a split's first n)."""
    return image_grid(images, list(labels), path, title, columns)


@styled
def class_distribution_figure(counts: Mapping[str, Sequence[int]], classes: Sequence[str],
                              path: str | Path, title: str) -> Path:
    """Images per class as grouped bars, one colour per split, each bar labelled with its count.

    Size: max(6, 1.5 + 0.5 * classes * splits) x 4.5 inches.
    """
    n, splits = len(classes), max(1, len(counts))
    width = max(6.0, 1.5 + 0.5 * n * splits)
    fig = new_figure(width, 4.5)
    ax = fig.subplots()
    bar = 0.8 / splits
    x = np.arange(n)
    for k, (split, values) in enumerate(counts.items()):
        bars = ax.bar(x + (k - (splits - 1) / 2) * bar, values, bar, label=f"{split} "
                      f"({sum(values):,})")
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, classes, rotation=45 if n > 5 else 0, ha="right" if n > 5 else "center")
    ax.set(xlabel="class", ylabel="images")
    set_title(ax, title)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.12)  # room for the count labels above the tallest bar
    if counts:
        ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save(fig, path)


@styled
def augmentation_figure(original: np.ndarray, augmented: Sequence[np.ndarray],
                        path: str | Path, title: str) -> Path:
    """An image, then versions of it from the training augmentation, in one row."""
    captions = ["original"] + [f"augmented {i}" for i in range(1, len(augmented) + 1)]
    return image_grid([original, *augmented], captions, path, title, columns=1 + len(augmented))


@styled
def input_batch_figure(images: Sequence[np.ndarray], captions: Sequence[str],
                       path: str | Path, title: str, columns: int = 8) -> Path:
    """Images as the model is fed them (un-normalised for display), each with its label."""
    return image_grid(images, captions, path, title, columns, empty="empty batch")
