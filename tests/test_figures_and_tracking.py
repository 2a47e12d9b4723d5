"""Figures are valid PNGs; training logs land complete, or not at all, each series with its own x
column (`step` or `epoch`)."""

import json

import numpy as np
import pytest

from cnnlab.report.comparisons import read_series
from cnnlab.report.figures import confusion_figure, loss_figure
from cnnlab.train.training_log import training_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_confusion_and_loss_figures_are_pngs(tmp_path):
    confusion_figure(np.array([[5, 1], [2, 7]]), ["cat", "dog"], tmp_path / "cm.png", "cm")
    loss_figure([100, 200, 300], [2.3, 1.9, 1.5], tmp_path / "loss.png", "loss", every=100)
    loss_figure([], [], tmp_path / "empty.png", "short run", every=100)  # still a figure
    for name in ("cm.png", "loss.png", "empty.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_training_log_writes_series_and_summary(tmp_path):
    out = tmp_path / "metrics" / "cnn" / "train"
    with training_log(out) as (logger, summary):
        logger.log_step(100, 2.0, 1e-3)
        logger.log_step(200, 1.5, 5e-4)
        logger.log_epoch(1, 200, {"train_loss": 1.7, "train_accuracy": 0.4})
        logger.log_epoch(2, 400, {"train_loss": 1.25, "train_accuracy": 0.5})
        summary.update(train_seconds=3.5)
        assert not out.exists()  # nothing under the final name while training runs
    series = out / "plots/metrics"
    assert (series / "loss.tsv").read_text() == "step\tloss\n100\t2.0\n200\t1.5\n"
    assert (series / "lr.tsv").read_text() == "step\tlr\n100\t0.001\n200\t0.0005\n"
    # Per-epoch series are indexed by the epoch (dvclive would have called that column "step").
    assert ((series / "epoch/train_accuracy.tsv").read_text()
            == "epoch\ttrain_accuracy\n1\t0.4\n2\t0.5\n")
    assert (series / "epoch/train_loss.tsv").read_text() == "epoch\ttrain_loss\n1\t1.7\n2\t1.25\n"
    assert read_series(series / "epoch/train_loss.tsv", "train_loss") == ([1, 2], [1.7, 1.25])
    assert read_series(series / "lr.tsv", "lr") == ([100, 200], [1e-3, 5e-4])
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] == 3.5


def test_training_log_leaves_every_plot_output_of_dvc_yaml_even_when_nothing_was_logged(tmp_path):
    """dvc.yaml declares loss.tsv, lr.tsv, grad_norm/ and epoch/ as outputs: a run shorter than
    one logging interval, with no gradient norms, still leaves each, empty."""
    out = tmp_path / "train"
    with training_log(out) as (logger, _):
        logger.log_epoch(1, 7, {"train_loss": 2.25})
    series = out / "plots/metrics"
    assert sorted(p.relative_to(series).as_posix() for p in series.rglob("*")) == [
        "epoch", "epoch/train_loss.tsv", "grad_norm", "loss.tsv", "lr.tsv"]
    assert (series / "loss.tsv").read_text() == "step\tloss\n"
    assert (series / "lr.tsv").read_text() == "step\tlr\n"
    assert read_series(series / "loss.tsv", "loss") == ([], [])


def test_training_log_leaves_nothing_when_training_fails(tmp_path):
    out = tmp_path / "train"
    with pytest.raises(RuntimeError), training_log(out) as (logger, _):
        logger.log_step(100, 2.0, 1e-3)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
