"""draw_experiment_figures on a tiny experiment made by the real train and evaluate stages."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cnnlab import paths
from cnnlab.config import parse_params
from cnnlab.data.prepared import PreparedDataset, Split, save_prepared
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.stage import evaluate_experiment
from cnnlab.report.figure_sets import draw_experiment_figures
from cnnlab.train.stage import train_experiment

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
DATA_VIEWS = ["samples_per_class.png", "class_distribution.png", "augmentation_demo.png",
              "input_batch.png"]
TRAINING_VIEWS = ["loss_steps.png", "loss_epochs.png", "accuracy_epochs.png", "lr_schedule.png"]
EVAL_VIEWS = ["confusion_counts.png", "confusion_normalized.png", "classification_report.png",
              "per_class_accuracy.png", "most_confused.png", "predictions_correct.png",
              "predictions_incorrect.png", "misclassified_16.png"]
MODEL_VIEWS = ["filters_conv1.png", "feature_maps.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_cifar(seed: int = 0) -> PreparedDataset:
    """10 classes of 32x32 images, each class a colour plus noise: learnable, not perfectly."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (len(CLASSES), 3))

    def split(n: int) -> Split:
        labels = np.arange(n) % len(CLASSES)
        rng.shuffle(labels)
        noise = rng.integers(-90, 90, (n, 32, 32, 3))
        images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return Split(images, labels.astype(np.int64))

    return PreparedDataset("cifar10", CLASSES, {"train": split(80), "test": split(40)})


def tiny_params():
    experiment = {"dataset": "cifar10", "epochs": 2, "batch_size": 16, "seed": 0,
                  "optimizer": {"name": "adam", "lr": 0.001},
                  "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3},
                  "log_every": 2, "device": "cpu"}
    return parse_params({
        "data": {"cifar10": {"url": "unused", "md5": None},
                 "coco5": {"annotations": {"url": "unused", "md5": None},
                           "classes": ["boat", "dog"], "train_per_class": 1,
                           "val_per_class": 1}},
        "experiments": {
            "cnn": {**experiment, "model": "cnn", "log_grad_norms": True,
                    "augment": {"hflip": True, "crop_padding": 4}},
            "ann": {**experiment, "model": "ann"},
        },
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project directory with the prepared data, and cnn and ann trained and evaluated."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        save_prepared(tiny_cifar(), paths.prepared_dir("cifar10"))
        params = tiny_params()
        for name in ("cnn", "ann"):
            train_experiment(params, name)
            evaluate_experiment(params, name)
    return root, params


@pytest.fixture
def project(trained, tmp_path, monkeypatch):
    """A fresh copy of the trained project as the working directory: tests may break it."""
    root, params = trained
    shutil.copytree(root, tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    return params


def assert_pngs(folder, names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name


def test_conv_model_gets_every_figure_byte_identical_on_a_rerun(project):
    written = draw_experiment_figures(project, "cnn")
    expected = DATA_VIEWS + TRAINING_VIEWS + ["grad_norms.png"] + EVAL_VIEWS + MODEL_VIEWS
    folder = paths.METRICS / "cnn" / "figures"
    assert written == [folder / name for name in expected]
    assert_pngs(folder, expected)
    first = {p.name: p.read_bytes() for p in written}
    draw_experiment_figures(project, "cnn")
    assert {p.name: p.read_bytes() for p in written} == first


def test_mlp_gets_no_model_views_and_no_grad_norms_it_did_not_log(project, tmp_path):
    written = draw_experiment_figures(project, "ann", out_dir=tmp_path / "elsewhere")
    expected = DATA_VIEWS + TRAINING_VIEWS + EVAL_VIEWS
    assert [p.name for p in written] == expected
    assert_pngs(tmp_path / "elsewhere", expected)
    assert not (paths.METRICS / "ann" / "figures").exists()


@pytest.mark.parametrize("remove, stage", [
    (lambda: paths.eval_dir("cnn") / "predictions.csv", "evaluate@cnn"),
    (lambda: paths.model_checkpoint("cnn"), "train@cnn"),
    (lambda: paths.train_log_dir("cnn"), "train@cnn"),
    (lambda: paths.prepared_dir("cifar10"), "prepare_cifar10"),
], ids=["predictions", "checkpoint", "train_logs", "prepared_data"])
def test_missing_artifact_names_it_and_the_stage_and_writes_nothing(project, remove, stage):
    target = remove()
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CnnlabError, match=rf"{target}.*`dvc repro {stage}`"):
        draw_experiment_figures(project, "cnn")
    assert not (paths.METRICS / "cnn" / "figures").exists()


def test_stale_predictions_are_refused(project):
    csv = paths.eval_dir("cnn") / "predictions.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:-3]) + "\n")  # 3 rows short
    with pytest.raises(CnnlabError, match=r"does not match the test split.*evaluate@cnn"):
        draw_experiment_figures(project, "cnn")
