"""Prediction over a device split, the predictions table that dvc plots draws, and the evaluate
stage's metrics record and provenance."""

import csv
import json
from importlib import metadata

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score
from torch import nn

from cnnlab import paths
from cnnlab.config import Experiment, Normalize, OptimizerConfig, parse_params
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import PreparedDataset, Split, save_prepared
from cnnlab.evaluate.record import MetricsRecord
from cnnlab.evaluate.scoring import Predictions, predict, predictions_table
from cnnlab.evaluate.stage import evaluate_experiment
from cnnlab.train.stage import train_experiment


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


# The evaluate stage on a tiny trained experiment: its metrics record against an independent
# recomputation from its own predictions, and its provenance beside it.

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def tiny_cifar() -> PreparedDataset:
    """Each class a colour plus noise: learnable, not perfectly."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (len(CLASSES), 3))

    def split(n: int) -> Split:
        labels = rng.permutation(np.arange(n) % len(CLASSES))
        noise = rng.integers(-90, 90, (n, 32, 32, 3))
        images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return Split(images, labels.astype(np.int64))

    return PreparedDataset("cifar10", CLASSES, {"train": split(80), "test": split(40)})


def tiny_params():
    """ann (no buffers: its state dict counts its parameters), with a val split held out of
    train, train and val scored beside test, and the best epoch kept."""
    return parse_params({
        "data": {"cifar10": {"url": "unused", "md5": None},
                 "coco5": {"annotations": {"url": "unused", "md5": None},
                           "classes": ["boat", "dog"], "train_per_class": 1,
                           "val_per_class": 1}},
        "experiments": {"ann": {
            "model": "ann", "dataset": "cifar10", "epochs": 3, "batch_size": 16, "seed": 5,
            "optimizer": {"name": "adam", "lr": 0.003},
            "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}, "val_fraction": 0.25,
            "also_evaluate": ["train", "val"], "eval_each_epoch": True, "keep_best": True,
            "log_every": 2, "device": "cpu"}},
    })


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluated")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        save_prepared(tiny_cifar(), paths.prepared_dir("cifar10"))
        params = tiny_params()
        train_experiment(params, "ann")
        evaluate_experiment(params, "ann")
    return root, params


def test_the_metrics_file_is_a_record_of_the_stages_own_predictions(evaluated):
    root, _ = evaluated
    text = (root / paths.metrics_file("ann")).read_text(encoding="utf-8")
    record = MetricsRecord.read(root / paths.metrics_file("ann"), "ann")
    assert record.text() == text  # written by the record, nothing added
    with open(root / paths.eval_dir("ann") / "predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    actual = [CLASSES.index(r["actual"]) for r in rows]
    predicted = [CLASSES.index(r["predicted"]) for r in rows]
    labels = list(range(len(CLASSES)))
    assert record.accuracy == pytest.approx(accuracy_score(actual, predicted))
    assert record.f1_macro == pytest.approx(
        f1_score(actual, predicted, labels=labels, average="macro", zero_division=0))
    assert record.precision_macro == pytest.approx(
        precision_score(actual, predicted, labels=labels, average="macro", zero_division=0))
    for i, name in enumerate(CLASSES):
        hits = [p == i for a, p in zip(actual, predicted, strict=True) if a == i]
        assert record.per_class[name] == pytest.approx(sum(hits) / len(hits)), name
    state = torch.load(root / paths.model_checkpoint("ann"), weights_only=True)
    assert record.params == record.trainable_params == sum(t.numel() for t in state.values())
    assert (record.epochs, record.train_images, record.eval_images, record.seed) == (3, 60, 40, 5)


def test_split_accuracies_and_the_best_epoch_match_the_training_runs_own_scores(evaluated):
    """The evaluate stage scores the saved checkpoints again; training scored the same weights
    after each epoch, so both must agree."""
    root, _ = evaluated
    record = MetricsRecord.read(root / paths.metrics_file("ann"), "ann")
    summary = json.loads((root / paths.train_summary("ann")).read_text(encoding="utf-8"))
    assert set(record.split_accuracy) == {"train", "val"}
    assert record.split_accuracy["val"] == pytest.approx(summary["val_accuracy"])
    assert record.accuracy == pytest.approx(summary["test_accuracy"])
    assert record.best is not None and record.best.epoch == summary["best_epoch"]
    assert record.best.accuracy == pytest.approx(summary["best_test_accuracy"])
    assert record.best.split_accuracy["val"] == pytest.approx(summary["best_val_accuracy"])


def test_provenance_is_beside_the_metrics_and_not_in_them(evaluated):
    root, params = evaluated
    record_keys = set(json.loads((root / paths.metrics_file("ann")).read_text(encoding="utf-8")))
    info = json.loads((root / paths.eval_dir("ann") / "provenance.json").read_text(
        encoding="utf-8"))
    assert info["torch_version"] == metadata.version("torch")
    assert info["dvc_version"] == metadata.version("dvc")
    assert len(info["git_rev"]) in (40, len("unknown"))
    assert info["device"].startswith("cpu (") and info["train_device"].startswith("cpu")
    assert info["speed"]["precision"] == "auto" and isinstance(info["train_speed"], str)
    assert (info["dataset"], info["eval_split"], info["model"], info["seed"]) == (
        "cifar10", "test", "ann", 5)
    # The optimizer as built: torch's own Adam defaults fill what params.yaml left out.
    defaults = torch.optim.Adam([torch.zeros(1)], lr=0.003).defaults
    assert info["optimizer"]["lr"] == 0.003
    assert tuple(info["optimizer"]["betas"]) == defaults["betas"]
    assert info["optimizer"]["eps"] == defaults["eps"]
    assert info["optimizer"]["weight_decay"] == defaults["weight_decay"]
    assert not record_keys & {"git_rev", "device", "torch_version", "optimizer", "model",
                              "dataset", "split", "speed"}
