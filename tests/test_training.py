"""The shared training loop, on tiny synthetic data that a model can learn."""

import dataclasses

import numpy as np
import pytest
import torch

from cnnlab.config import Augment, Experiment, Normalize, OptimizerConfig
from cnnlab.data.prepared import PreparedDataset, Split
from cnnlab.errors import CnnlabError
from cnnlab.train.loop import train


def separable_dataset(n=256, seed=0) -> PreparedDataset:
    """Two classes told apart by brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 100, (n, 32, 32, 3)) + 120 * labels[:, None, None, None]
    split = Split(images.astype(np.uint8), labels.astype(np.int64))
    return PreparedDataset("toy", ("dark", "bright"), {"train": split, "test": split})


def experiment(**changes) -> Experiment:
    base = Experiment(model="cnn", dataset="cifar10", epochs=2, batch_size=32, seed=0,
                      optimizer=OptimizerConfig(name="adam", lr=1e-3),
                      normalize=Normalize((0.5,) * 3, (0.5,) * 3),
                      augment=Augment(hflip=True, crop_padding=4), log_every=3, device="cpu")
    return dataclasses.replace(base, **changes)


class RecordingLogger:
    def __init__(self):
        self.steps, self.epochs, self.lrs = [], [], []

    def log_step(self, step, loss, lr):
        self.steps.append((step, loss))
        self.lrs.append(lr)

    def log_epoch(self, epoch, step, metrics):
        self.epochs.append((epoch, step, metrics))


def test_trains_logs_and_learns():
    logger = RecordingLogger()
    result = train(experiment(), separable_dataset(), torch.device("cpu"), logger, progress=False)
    assert result.steps == 2 * 8 and result.train_images == 256
    assert [s for s, _ in logger.steps] == [3, 6, 9, 12, 15]
    assert logger.lrs == [1e-3] * 5  # no scheduler: the lr stays put
    assert [e for e, _, _ in logger.epochs] == [1, 2]
    assert set(logger.epochs[0][2]) == {"train_loss", "train_accuracy"}
    assert result.history[-1]["train_accuracy"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.images_per_second > 0 and not result.model.training


def test_same_seed_gives_bit_identical_weights_other_seed_does_not():
    data, cpu = separable_dataset(), torch.device("cpu")
    a = train(experiment(), data, cpu, progress=False).model.state_dict()
    b = train(experiment(), data, cpu, progress=False).model.state_dict()
    c = train(experiment(seed=1), data, cpu, progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_train_subset_limits_images_per_epoch():
    result = train(experiment(train_subset=64, epochs=1), separable_dataset(), torch.device("cpu"),
                   progress=False)
    assert result.train_images == 64 and result.steps == 2


def test_diverging_loss_fails_fast_naming_the_step():
    exp = experiment(optimizer=OptimizerConfig(name="sgd", lr=1e30), log_every=1)
    with pytest.raises(CnnlabError, match=r"loss became (nan|inf) by step \d+: training diverged"):
        train(exp, separable_dataset(), torch.device("cpu"), progress=False)


def test_grad_norms_are_logged_per_layer_at_each_loss_record():
    class Logger(RecordingLogger):
        def __init__(self):
            super().__init__()
            self.norms = []

        def log_grad_norms(self, step, norms):
            self.norms.append((step, norms))

    logger = Logger()
    train(experiment(epochs=1, log_grad_norms=True), separable_dataset(), torch.device("cpu"),
          logger, progress=False)
    assert [s for s, _ in logger.norms] == [3, 6]
    layers = list(logger.norms[0][1])
    assert layers == ["0", "3", "7", "9"]  # cnn's convs and linears, by Sequential index
    assert all(v > 0 for _, norms in logger.norms for v in norms.values())


def test_eval_split_is_scored_after_every_epoch_and_logged():
    logger = RecordingLogger()
    result = train(experiment(eval_each_epoch=True), separable_dataset(), torch.device("cpu"),
                   logger, progress=False)
    assert [set(m) for _, _, m in logger.epochs] == [
        {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}] * 2
    last = result.history[-1]
    assert last["test_accuracy"] > 0.9 and last["test_loss"] >= 0  # learnable, test = train
    assert result.model.training is False  # handed back in eval mode after the last epoch
