"""Figures are valid PNGs; dvclive logs land complete, or not at all."""

import json

import numpy as np
import pytest

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
        summary.update(train_seconds=3.5)
        assert not out.exists()  # nothing under the final name while training runs
    loss = (out / "plots/metrics/loss.tsv").read_text().splitlines()
    assert loss == ["step\tloss", "100\t2.0", "200\t1.5"]
    lr = (out / "plots/metrics/lr.tsv").read_text().splitlines()
    assert lr == ["step\tlr", "100\t0.001", "200\t0.0005"]
    acc = (out / "plots/metrics/epoch/train_accuracy.tsv").read_text().splitlines()
    assert acc == ["step\ttrain_accuracy", "1\t0.4"]
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] == 3.5


def test_training_log_leaves_nothing_when_training_fails(tmp_path):
    out = tmp_path / "train"
    with pytest.raises(RuntimeError), training_log(out) as (logger, _):
        logger.log_step(100, 2.0, 1e-3)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
