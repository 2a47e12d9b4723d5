"""The captioned image grid that every image figure is drawn with (samples, predictions, ...)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab.report.figures._save import bare, message, new_figure, save, suptitle

CELL_WIDTH = 1.5  # inches per image
CELL_HEIGHT = 1.75  # inches per image and its caption (up to two lines)
TITLE_HEIGHT = 0.6  # inches for the figure title


def grid_shape(n: int, columns: int) -> tuple[int, int]:
    """(rows, columns) for n images at most `columns` wide; an empty grid is one cell."""
    columns = max(1, min(columns, n))
    return max(1, math.ceil(n / columns)), columns


def image_grid(
    images: Sequence[np.ndarray | None],
    captions: Sequence[str],
    path: str | Path,
    title: str,
    columns: int,
    colors: Sequence[str] | None = None,
    empty: str = "no images to show",
    cmap: str | None = None,
    cell: tuple[float, float] = (CELL_WIDTH, CELL_HEIGHT),
) -> Path:
    """Images (H, W, 3) in rows of `columns`, each with its caption above it.

    `None` leaves a labelled blank cell (a class with no image); `colors` colours the captions.
    The figure is `cell` (width, height) inches per image plus TITLE_HEIGHT, at least 4 wide.
    """
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    rows, cols = grid_shape(len(images), columns)
    width = max(4.0, cell[0] * cols)
    fig = new_figure(width, TITLE_HEIGHT + cell[1] * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        bare(ax)
    if not images:
        message(axes[0], empty)
    shapes = [image.shape for image in images if image is not None]
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = axes[i]
        if image is not None:
            ax.imshow(image, cmap=cmap)
        else:  # a white image of the same size keeps the caption in line with the others
            ax.imshow(np.full(shapes[0] if shapes else (1, 1, 3), 255, dtype=np.uint8))
            message(ax, "(none)")
        ax.set_title(caption, fontsize=8, color=colors[i] if colors else "black")
    suptitle(fig, title)
    return save(fig, path)
