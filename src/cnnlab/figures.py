"""Figures drawn from saved predictions and logs. Computing happens elsewhere; this only draws."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnlab.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], path: str | Path,
                     title: str) -> None:
    """Heatmap of counts with each cell labelled; rows are true classes."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)


def loss_figure(steps: Sequence[int], losses: Sequence[float], path: str | Path, title: str,
                every: int) -> None:
    """Training loss against the global step, one point per `every` steps."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker=".", linewidth=1)
    if not steps:  # a short run (quick profile, tiny subset) never reached a logging point
        ax.text(0.5, 0.5, f"no loss recorded: the run had fewer than {every} steps",
                ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="step", ylabel=f"mean loss over {every} steps", title=title)
    ax.grid(alpha=0.3)
    _save(fig, path)


def loss_curves_figure(series: dict[str, tuple[Sequence[int], Sequence[float]]],
                       path: str | Path, title: str, every: int) -> None:
    """Several runs' training losses on one set of axes."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (steps, losses) in series.items():
        ax.plot(steps, losses, linewidth=1.2, label=name)
    ax.set(xlabel="step", ylabel=f"mean loss over {every} steps", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def grad_norms_figure(norms: dict[str, dict[str, float]], path: str | Path, title: str) -> None:
    """Mean gradient norm per layer, input side first, one line per run (log scale)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, per_layer in norms.items():
        if per_layer:
            ax.plot(list(per_layer), list(per_layer.values()), marker="o", label=name)
    ax.set(yscale="log", xlabel="layer (input side first)",
           ylabel="mean weight-gradient L2 norm", title=title)
    ax.tick_params(axis="x", rotation=45)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)
