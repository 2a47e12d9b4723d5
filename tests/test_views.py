"""draw_experiment_figures on a tiny experiment made by the real train and evaluate stages."""

from __future__ import annotations

import csv
import shutil
import struct

import numpy as np
import pytest

from cnnlab import paths
from cnnlab.config import parse_params
from cnnlab.data.prepared import PreparedDataset, Split, load_prepared, save_prepared
from cnnlab.data.selection import select_data
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.stage import evaluate_experiment
from cnnlab.report import figures
from cnnlab.report.figure_sets import draw_experiment_figures
from cnnlab.report.figures._save import MARK
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
            # Named after study 003's and 004's experiments (their study picks their figures),
            # on the tiny cnn: the figures depend on the study, not on the model.
            "deepcnn": {**experiment, "model": "cnn", "epochs": 3, "eval_each_epoch": True},
            "dropcnn_adam": {**experiment, "model": "cnn", "val_fraction": 0.2,
                             "also_evaluate": ["val"], "eval_each_epoch": True},
        },
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project directory with the prepared data, and every tiny experiment trained and
    evaluated."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        save_prepared(tiny_cifar(), paths.prepared_dir("cifar10"))
        params = tiny_params()
        for name in params.experiments:
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


def png_height(path) -> int:
    return struct.unpack(">II", path.read_bytes()[16:24])[1]


def mark_pixels(path) -> int:
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = np.array([int(MARK[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=-1) < 30).sum())


def predictions(name: str) -> list[dict[str, str]]:
    with open(paths.eval_dir(name) / "predictions.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reference_examples(params, name: str, indices: list[int], path, title: str, columns: int):
    """The examples figure drawn here from predictions.csv's rows at `indices`."""
    rows = predictions(name)
    exp = params.experiment(name)
    images = select_data(exp, load_prepared(paths.prepared_dir("cifar10"))).split("test").images
    return figures.predictions_figure(
        [images[i] for i in indices], [rows[i]["actual"] for i in indices],
        [rows[i]["predicted"] for i in indices], [float(rows[i]["confidence"]) for i in indices],
        path, title, columns)


def test_study_000_shows_the_first_16_filters_others_up_to_64(project):
    """conv1 of the tiny cnn has 32 filters: 2 rows of 8 for study 000's cnn, 4 for deepcnn."""
    draw_experiment_figures(project, "cnn")
    draw_experiment_figures(project, "deepcnn")
    cnn, deep = (paths.METRICS / n / "figures" / "filters_conv1.png" for n in ("cnn", "deepcnn"))
    assert png_height(cnn) == round(100 * (0.6 + 1.05 * 2))
    assert png_height(deep) == round(100 * (0.6 + 1.05 * 4))


def test_study_003_marks_the_best_epoch_and_shows_the_first_8_predictions(project, tmp_path):
    written = draw_experiment_figures(project, "deepcnn")
    folder = paths.METRICS / "deepcnn" / "figures"
    assert [p.name for p in written][-1:] == ["predictions_first_8.png"]
    assert mark_pixels(folder / "accuracy_epochs.png") > 200
    draw_experiment_figures(project, "dropcnn_adam")  # per-epoch scores too, another study
    assert mark_pixels(paths.METRICS / "dropcnn_adam" / "figures" / "accuracy_epochs.png") == 0
    expected = reference_examples(
        project, "deepcnn", list(range(8)), tmp_path / "first8.png",
        "deepcnn: the first 8 test images and their predictions (green: right, red: wrong)", 4)
    assert (folder / "predictions_first_8.png").read_bytes() == expected.read_bytes()


def test_study_004_shows_the_first_5_training_images_and_first_3_of_each_outcome(project,
                                                                                  tmp_path):
    written = draw_experiment_figures(project, "dropcnn_adam")
    folder = paths.METRICS / "dropcnn_adam" / "figures"
    assert [p.name for p in written][-3:] == ["train_first_5.png", "correct_first_3.png",
                                              "incorrect_first_3.png"]
    rows = predictions("dropcnn_adam")
    right = [i for i, r in enumerate(rows) if r["actual"] == r["predicted"]]
    wrong = [i for i, r in enumerate(rows) if r["actual"] != r["predicted"]]
    assert len(right) > 3 and len(wrong) > 3  # the tiny model gets some of each
    for outcome, indices in (("correct", right), ("incorrect", wrong)):
        title = f"dropcnn_adam: the first 3 {outcome} predictions (test)"
        expected = reference_examples(project, "dropcnn_adam", indices[:3],
                                      tmp_path / f"{outcome}.png", title, 3)
        other = reference_examples(project, "dropcnn_adam", indices[1:4],
                                   tmp_path / f"{outcome}_later.png", title, 3)
        drawn = (folder / f"{outcome}_first_3.png").read_bytes()
        assert drawn == expected.read_bytes() != other.read_bytes()
    # The first 5 of train as prepared: before the 20% val hold-out reorders it.
    train = load_prepared(paths.prepared_dir("cifar10")).split("train")
    expected = figures.labelled_images_figure(
        list(train.images[:5]), [CLASSES[i] for i in train.labels[:5]], tmp_path / "first5.png",
        "dropcnn_adam: the first 5 training images", columns=5)
    assert (folder / "train_first_5.png").read_bytes() == expected.read_bytes()


def test_the_confusion_figures_are_drawn_with_true_classes_as_rows(project, tmp_path):
    """Every test image predicted as the first class: the drawn matrix has that one column
    filled, row i holding class i's count. The figure set's PNG must equal one drawn here from
    that hand-built matrix; a transposed matrix (one row filled) would not."""
    path = paths.eval_dir("cnn") / "predictions.csv"
    rows = predictions("cnn")
    classes = sorted({r["actual"] for r in rows} | {r["predicted"] for r in rows})
    names = list(tiny_cifar().classes)
    for row in rows:
        row["predicted"] = names[0]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    draw_experiment_figures(project, "cnn")
    expected = np.zeros((len(names), len(names)), dtype=np.int64)
    for row in rows:
        expected[names.index(row["actual"]), 0] += 1
    assert classes and expected[:, 0].sum() == len(rows)
    reference = figures.confusion_figure(
        expected, names, tmp_path / "reference.png",
        f"cnn: confusion matrix (test, {len(rows):,} images)")
    drawn = paths.METRICS / "cnn" / "figures" / "confusion_counts.png"
    assert drawn.read_bytes() == reference.read_bytes()
    transposed = figures.confusion_figure(
        expected.T, names, tmp_path / "transposed.png",
        f"cnn: confusion matrix (test, {len(rows):,} images)")
    assert drawn.read_bytes() != transposed.read_bytes()
