"""Figures of training logs: losses, accuracies, the learning rate and gradient norms.

A series is (x values, y values), as cnnlab.report.comparisons.read_series returns it; a dict of
series is drawn as one line each, labelled with its key. Every figure here is 7 x 4 inches (8 x
4.5 for the per-layer ones, whose legend sits beside the axes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from cnnlab.report.figures._save import MARK, message, new_figure, save, set_title, styled

Series = tuple[Sequence[float], Sequence[float]]
Mark = tuple[float, float, str]  # (x, y, what the annotation says)


def _lines(ax, series: Mapping[str, Series], marker: str | None = None) -> None:
    if len(series) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=[colormaps["tab20"](i % 20) for i in range(len(series))])
    for name, (x, y) in series.items():
        ax.plot(x, y, marker=marker, markersize=4, linewidth=1.3, label=name)


def _legend_beside(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


@styled
def loss_figure(steps: Sequence[int], losses: Sequence[float], path: str | Path, title: str,
                every: int) -> Path:
    """Training loss against the global step, one point per `every` steps."""
    fig = new_figure(7, 4)
    ax = fig.subplots()
    ax.plot(steps, losses, marker=".", linewidth=1)
    if not steps:  # a short run (quick profile, tiny subset) never reached a logging point
        message(ax, f"no loss recorded: the run had fewer than {every} steps")
    ax.set(xlabel="step", ylabel=f"mean loss over {every} steps")
    set_title(ax, title)
    ax.grid(alpha=0.3)
    return save(fig, path)


@styled
def loss_curves_figure(series: Mapping[str, Series], path: str | Path, title: str,
                       every: int) -> Path:
    """Several runs' training losses on one set of axes."""
    fig = new_figure(7, 4)
    ax = fig.subplots()
    _lines(ax, series)
    ax.set(xlabel="step", ylabel=f"mean loss over {every} steps")
    set_title(ax, title)
    ax.grid(alpha=0.3)
    if any(steps for steps, _ in series.values()):
        ax.legend()
    else:
        message(ax, "no loss recorded")
    return save(fig, path)


def _mark(ax, mark: Mark) -> None:
    """A star on the point, and its text in the lower right of the axes with an arrow to it
    (accuracy curves rise, so that corner is clear; a fixed place never leaves the figure)."""
    x, y, text = mark
    ax.plot([x], [y], marker="*", markersize=14, color=MARK, linestyle="none", zorder=4)
    ax.annotate(text, xy=(x, y), xytext=(0.97, 0.06), textcoords="axes fraction", ha="right",
                va="bottom", color=MARK, fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": MARK},
                arrowprops={"arrowstyle": "->", "color": MARK})


@styled
def epoch_figure(series: Mapping[str, Series], path: str | Path, title: str, ylabel: str,
                 ylim: tuple[float, float] | None = None, mark: Mark | None = None) -> Path:
    """Per-epoch values (train, val, test, ...) against the epoch: loss or accuracy curves.
    `mark` stars one point (x, y) and annotates it with its text (study 003: the best epoch)."""
    fig = new_figure(7, 4)
    ax = fig.subplots()
    _lines(ax, series, marker="o")
    if mark is not None:
        _mark(ax, mark)
    ax.set(xlabel="epoch", ylabel=ylabel)
    set_title(ax, title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if any(epochs for epochs, _ in series.values()):
        ax.legend()
    else:
        message(ax, "nothing logged per epoch")
    return save(fig, path)


@styled
def lr_figure(steps: Sequence[int], lrs: Sequence[float], path: str | Path, title: str) -> Path:
    """The learning rate as the optimizer applied it, at each logged step."""
    fig = new_figure(7, 4)
    ax = fig.subplots()
    ax.plot(steps, lrs, marker=".", linewidth=1.3)
    if not steps:
        message(ax, "no learning rate recorded: the run was shorter than one logging interval")
    ax.set(xlabel="step", ylabel="learning rate")
    set_title(ax, title)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(alpha=0.3)
    return save(fig, path)


@styled
def grad_norm_steps_figure(series: Mapping[str, Series], path: str | Path, title: str) -> Path:
    """Each layer's weight-gradient L2 norm over the steps, one line per layer, log scale.

    `series` is in layer order (input side first), which the legend keeps.
    """
    fig = new_figure(8, 4.5)
    ax = fig.subplots()
    _lines(ax, series)
    ax.set(yscale="log", xlabel="step", ylabel="weight-gradient L2 norm")
    set_title(ax, title)
    ax.grid(alpha=0.3, which="both")
    if series:
        _legend_beside(ax)
    else:
        message(ax, "no gradient norms recorded")
    return save(fig, path)


@styled
def grad_norms_figure(norms: Mapping[str, Mapping[str, float]], path: str | Path,
                      title: str) -> Path:
    """Mean gradient norm per layer, input side first, one line per run (log scale)."""
    fig = new_figure(8, 4.5)
    ax = fig.subplots()
    for name, per_layer in norms.items():
        if per_layer:
            ax.plot(list(per_layer), list(per_layer.values()), marker="o", label=name)
    ax.set(yscale="log", xlabel="layer (input side first)",
           ylabel="mean weight-gradient L2 norm")
    set_title(ax, title)
    ax.tick_params(axis="x", rotation=45)
    ax.grid(alpha=0.3, which="both")
    if any(norms.values()):
        _legend_beside(ax)
    else:
        message(ax, "no gradient norms recorded")
    return save(fig, path)
