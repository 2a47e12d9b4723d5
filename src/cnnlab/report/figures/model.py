"""Figures of what a trained conv net learned: its first-layer filters and its feature maps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cnnlab.report.figure_data import filters_as_images
from cnnlab.report.figures._grid import image_grid
from cnnlab.report.figures._save import bare, new_figure, save, styled, suptitle

FEATURE_CELL = 1.1  # inches per feature map


@styled
def filters_figure(weights: np.ndarray, path: str | Path, title: str, limit: int = 64,
                   columns: int = 8) -> Path:
    """The first `limit` filters of a conv layer, weights (out, in, kh, kw), as small RGB tiles.

    Each filter is min-max scaled on its own (cnnlab.report.figure_data.filters_as_images) and
    captioned with its index. Size: max(4, 0.9 columns) x (0.6 + 1.05 rows) inches.
    """
    tiles = filters_as_images(weights, limit)
    return image_grid(list(tiles), [f"#{i}" for i in range(len(tiles))], path, title, columns,
                      empty="no filters", cell=(0.9, 1.05))


@styled
def feature_maps_figure(image: np.ndarray, maps: Mapping[str, np.ndarray], path: str | Path,
                        title: str, channels: int = 8) -> Path:
    """One input image and, per layer, its first `channels` output maps (C, H, W), one row each.

    Rows are labelled with the layer's name, channel count and map size; each map has its own
    colour scale. Size: (1.4 + 1.1 (k + 1)) x (0.7 + 1.1 rows) inches, k the channels shown.
    """
    layers = list(maps.items())
    k = max([min(channels, m.shape[0]) for _, m in layers], default=1)
    rows = max(1, len(layers))
    width = 1.4 + FEATURE_CELL * (k + 1)
    fig = new_figure(width, 0.7 + FEATURE_CELL * rows)
    axes = fig.subplots(rows, k + 1, squeeze=False)
    for ax in axes.ravel():
        bare(ax)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("input", fontsize=8)
    for r, (layer, fmap) in enumerate(layers):
        for c in range(min(k, fmap.shape[0])):
            axes[r, c + 1].imshow(fmap[c], cmap="viridis")
            if r == 0:
                axes[r, c + 1].set_title(f"channel {c}", fontsize=8)
        axes[r, 1].set_ylabel(f"{layer}\n{fmap.shape[0]} ch, {fmap.shape[1]}x{fmap.shape[2]}",
                              rotation=0, ha="right", va="center", fontsize=8)
    suptitle(fig, title)
    return save(fig, path)
