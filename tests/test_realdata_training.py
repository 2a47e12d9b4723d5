"""The real path on real data: study 000's `cnn` recipe learns CIFAR-10."""

import dataclasses

import pytest
import torch

from cnnlab.config import load_params
from cnnlab.data.loader import DeviceSplit
from cnnlab.evaluate.metrics import classification_metrics
from cnnlab.evaluate.scoring import predict
from cnnlab.train.loop import train

pytestmark = pytest.mark.realdata


def test_cnn_two_epochs_on_a_seeded_10k_subset_reaches_50_percent(real_cifar10):
    exp = dataclasses.replace(load_params("params.yaml").experiment("cnn"),
                              epochs=2, train_subset=10_000, device="cpu")
    cpu = torch.device("cpu")
    result = train(exp, real_cifar10, cpu, progress=False)
    test = real_cifar10.split("test")
    probs = predict(result.model, DeviceSplit(test, cpu), exp)
    metrics = classification_metrics(test.labels, probs.predicted, real_cifar10.classes)
    print(f"cnn, 2 epochs on 10,000 images: test accuracy {metrics.accuracy:.4f}")
    assert result.train_images == 10_000 and len(test) == 10_000
    assert metrics.accuracy >= 0.50
