"""What every figure shares: one style, a fixed pixel size and byte-identical PNGs.

Figures are plain matplotlib `Figure`s on the Agg canvas (no pyplot, so no global figure state
and nothing to close). The size is fixed up front and constrained layout fits titles, labels and
legends inside it, so the PNG's width and height follow from the inputs alone, and the same
inputs give the same bytes: the style is pinned (a user's matplotlibrc changes nothing) and the
PNG carries no "Software" text with a version in it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from cnnlab.atomic import atomic_path

DPI = 100  # pixels per inch: a figure of w x h inches is a PNG of w*DPI x h*DPI pixels
RIGHT = "#1a7f37"  # green for a correct prediction
WRONG = "#cf222e"  # red for a wrong one
MARK = "#8250df"  # purple for a point a figure marks (the best epoch)

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "figure.titlesize": 11,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",  # show pixels as pixels: the images are 32x32 or 64x64
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

F = TypeVar("F", bound=Callable)


def styled(draw: F) -> F:
    """Run a drawing function under matplotlib's defaults plus STYLE, whatever the rc says."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.style.context(["default", STYLE]):
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float) -> Figure:
    """A figure of width x height inches whose layout keeps every label inside it."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG under a temporary name, then rename it to `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return path


def fit(fig: Figure, text: str, fontsize: float, width_in: float) -> str:
    """Break `text` at spaces into lines no wider than `width_in` inches, measured in the font.

    Constrained layout shrinks axes to make room for labels but cannot shrink a title wider
    than the figure, so long titles are wrapped instead of cut off.
    """
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=fontsize)
    limit = width_in * fig.dpi
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            width, _, _ = renderer.get_text_width_height_descent(trial, font, ismath=False)
            if width > limit and line:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return "\n".join(lines)


def suptitle(fig: Figure, text: str) -> None:
    """The figure's title, across its whole width."""
    fig.suptitle(fit(fig, text, STYLE["figure.titlesize"], fig.get_figwidth() - 0.3))


def set_title(ax, text: str) -> None:
    """An axes' title, wrapped to the figure's width less room for the y-axis labels."""
    ax.set_title(fit(ax.figure, text, STYLE["axes.titlesize"], ax.figure.get_figwidth() - 0.8))


def message(ax, text: str) -> None:
    """Say on the axes why there is nothing to draw, instead of leaving them blank."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)


def bare(ax) -> None:
    """No ticks and no frame: for axes that hold an image."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
