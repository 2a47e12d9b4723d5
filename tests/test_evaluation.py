"""Prediction over a device split and the predictions table that dvc plots draws."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.config import Experiment, Normalize, OptimizerConfig
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import Split
from cnnlab.evaluate.scoring import Predictions, predict, predictions_table


class Brightness(nn.Module):
    """Class 1 when the mean pixel is above 0 after normalisation."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1) * 10


def test_predict_keeps_order_across_batches_and_returns_probabilities():
    labels = np.array([0, 1, 1, 0, 1])
    images = np.where(labels[:, None, None, None] == 1, 250, 5).astype(np.uint8)
    images = np.broadcast_to(images, (5, 4, 4, 3)).copy()
    data = DeviceSplit(Split(images, labels), torch.device("cpu"))
    exp = Experiment(model="cnn", dataset="cifar10", epochs=1, batch_size=2, seed=0,
                     optimizer=OptimizerConfig("adam"), normalize=Normalize((0.5,) * 3, (0.5,) * 3))
    model = Brightness().train()
    preds = predict(model, data, exp, batch_size=2)
    assert preds.probs.shape == (5, 2) and np.allclose(preds.probs.sum(1), 1)
    assert preds.predicted.tolist() == labels.tolist() and preds.accuracy == 1.0
    assert model.training  # scoring puts the mode back, so per-epoch scoring leaves it training
    # The loss against an independent reference: cross-entropy of the same logits, by formula.
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    logits = Brightness()(x)
    expected = float((torch.logsumexp(logits, 1) - logits[torch.arange(5), labels]).mean())
    assert preds.loss == pytest.approx(expected, rel=1e-5)


def test_predictions_table_names_classes_and_confidence():
    probs = np.array([[0.9, 0.1], [0.3, 0.7]], dtype=np.float32)
    rows = predictions_table(Predictions(probs, np.array([0, 0]), 0.0), ("cat", "dog"))
    assert rows == [
        {"index": 0, "actual": "cat", "predicted": "cat", "confidence": 0.9},
        {"index": 1, "actual": "cat", "predicted": "dog", "confidence": 0.7},
    ]
