"""Every figure of one experiment, drawn from what its stages saved, never by retraining.

`draw_experiment_figures(params, name)` reads
- the prepared dataset `data/prepared/<dataset>/` (the train split and the experiment's eval split),
- from train@<exp>: the checkpoint `data/models/<exp>.pt` and the dvclive logs under
  `metrics/<exp>/train/plots/metrics/` (loss.tsv, lr.tsv, epoch/*.tsv, grad_norm/<layer>.tsv),
- from evaluate@<exp>: `metrics/<exp>/eval/predictions.csv`,
and replaces `metrics/<exp>/figures/` with these files, all of them or none:

  samples_per_class.png      the first training image of each class
  class_distribution.png     images per class in each split of the dataset
  augmentation_demo.png      one training image and 5 draws of the experiment's own augmentation
  input_batch.png            the start of the first training batch as the model sees it
                             (augmented and normalised, un-normalised for display)
  loss_steps.png             mean training loss every log_every steps
  loss_epochs.png            every epoch/*loss*.tsv series (train, and val/test when logged)
  accuracy_epochs.png        every epoch/*accuracy*.tsv series
  lr_schedule.png            the learning rate as the optimizer applied it
  grad_norms.png             per-layer gradient norms over the steps (only when they were logged)
  confusion_counts.png       confusion matrix of the eval split, counts
  confusion_normalized.png   the same, each row divided by its class's size
  classification_report.png  precision, recall, F1 and support per class, and their averages
  per_class_accuracy.png     accuracy per class, sorted
  most_confused.png          the 10 most frequent (true -> predicted) mistakes
  predictions_correct.png    8 correct predictions, drawn with the experiment's seed
  predictions_incorrect.png  8 wrong predictions, drawn with the experiment's seed
  misclassified_16.png       16 misclassified eval images drawn across the split, labelled T/P
  filters_conv1.png          the first conv layer's filters, the first 64 (study 000: the first
                             16, as it showed them; models with a Conv2d only)
  feature_maps.png           the first eval image through every conv layer (likewise)

and what the experiment's study drew with its own choice of examples (figure_data.STUDY_VIEWS, by
the study the experiment belongs to; the first n in the split's order, as the study took them):

  accuracy_epochs.png        study 003: the best eval-split accuracy and its epoch starred
  predictions_first_8.png    study 003: the first 8 eval images with their predictions
  train_first_5.png          study 004: the first 5 training images (before the val hold-out,
                             as the study showed X_train[:5] before splitting it)
  correct_first_3.png        study 004: the first 3 correct predictions on the eval split
  incorrect_first_3.png      study 004: the first 3 incorrect ones

Every random choice comes from the experiment's seed, so the same artifacts give the same bytes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import Experiment, Params
from cnnlab.data.augment import augment_batch, model_input
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import PreparedDataset, Split, load_prepared
from cnnlab.data.selection import ExperimentData, select_data
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.metrics import classification_metrics, classification_report_rows
from cnnlab.models.checkpoints import load_model
from cnnlab.report import figures
from cnnlab.report.comparisons import read_series
from cnnlab.report.figure_data import (
    StudyViews,
    best_point,
    class_counts,
    confusion_counts,
    first_index_per_class,
    first_indices,
    first_where,
    most_confused_pairs,
    sample_indices,
    study_views,
    to_display,
)

AUGMENTED_VERSIONS = 5
BATCH_SHOWN = 16  # images of the first training batch
EXAMPLES = 8  # correct and incorrect predictions each
MISCLASSIFIED = 16  # study 000's grid
CONFUSED_PAIRS = 10
FEATURE_CHANNELS = 8
NO_AUGMENT = "no augmentation"
PREPARE_STAGE = {"cifar10": "prepare_cifar10", "coco5": "build_coco5"}  # the dvc.yaml stages


def figures_dir(name: str) -> Path:
    return paths.METRICS / name / "figures"


@dataclass(frozen=True)
class Logs:
    """dvclive series of one training run; a series the run never logged is empty."""

    loss: tuple[list[int], list[float]]
    lr: tuple[list[int], list[float]]
    epoch: dict[str, tuple[list[int], list[float]]]  # file stem -> series
    grad_norms: dict[str, tuple[list[int], list[float]]]  # layer -> series


@dataclass(frozen=True)
class Predictions:
    true: np.ndarray  # class indices, in eval-split order
    predicted: np.ndarray
    confidence: np.ndarray


def draw_experiment_figures(params: Params, name: str, out_dir: Path | None = None
                            ) -> list[Path]:
    """Draw every figure of experiment `name` into `out_dir` (metrics/<name>/figures/)."""
    exp = params.experiment(name)
    final = Path(out_dir) if out_dir is not None else figures_dir(name)
    views = study_views(name)
    # Read everything first: a missing artifact fails before anything is written.
    prepared = _load_dataset(exp, name)
    dataset = select_data(exp, prepared)
    eval_images = dataset.split(exp.eval_split).images
    logs = read_logs(name)
    preds = read_predictions(name, dataset, exp.eval_split)
    model = load_model(exp, name, len(dataset.classes), paths.model_checkpoint(name))
    with atomic_dir(final) as out:
        written = [
            *_data_figures(exp, name, dataset, out),
            *_training_figures(exp, name, logs, _layer_labels(model), views, out),
            *_evaluation_figures(exp, name, dataset.classes, eval_images, preds, out),
            *_model_figures(exp, name, model, eval_images[0], views.filters, out),
            *_study_figures(exp, name, views, prepared.split("train"), dataset.classes,
                            eval_images, preds, out),
        ]
    return [final / path.name for path in written]


# -- reading the artifacts ------------------------------------------------------------------

def _load_dataset(exp: Experiment, name: str) -> PreparedDataset:
    folder = paths.prepared_dir(exp.dataset)
    if not (folder / "meta.json").is_file():
        stage = PREPARE_STAGE.get(exp.dataset, f"train@{name}")
        raise CnnlabError(f"prepared dataset {folder} not found (run `dvc repro {stage}` first)")
    return load_prepared(folder)


def read_logs(name: str) -> Logs:
    """The training run's dvclive series; a run without its summary has not finished."""
    log_dir = paths.train_log_dir(name)
    if not (log_dir / "metrics.json").is_file():
        raise CnnlabError(f"training logs {log_dir} not found (run `dvc repro train@{name}` first)")
    folder = log_dir / "plots" / "metrics"
    return Logs(
        loss=_series(folder / "loss.tsv"),
        lr=_series(folder / "lr.tsv"),
        epoch={tsv.name.removesuffix(".tsv"): _series(tsv)
               for tsv in sorted((folder / "epoch").glob("*.tsv"))},
        grad_norms={tsv.name.removesuffix(".tsv"): _series(tsv)
                    for tsv in sorted((folder / "grad_norm").glob("*.tsv"))},
    )


def _series(tsv: Path) -> tuple[list[int], list[float]]:
    try:  # dvclive names the value column after the metric's last path part
        return read_series(tsv, tsv.name.removesuffix(".tsv"))
    except (KeyError, ValueError) as exc:
        raise CnnlabError(f"{tsv} is not a dvclive series ({exc})") from exc


def read_predictions(name: str, dataset: ExperimentData, split: str) -> Predictions:
    """predictions.csv as class indices, checked against the split it claims to describe."""
    path = paths.eval_dir(name) / "predictions.csv"
    rerun = f"run `dvc repro evaluate@{name}`"
    if not path.is_file():
        raise CnnlabError(f"{path} not found ({rerun} first)")
    index = {cls: i for i, cls in enumerate(dataset.classes)}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    try:
        order = [int(r["index"]) for r in rows]
        true = np.array([index[r["actual"]] for r in rows], dtype=np.int64)
        predicted = np.array([index[r["predicted"]] for r in rows], dtype=np.int64)
        confidence = np.array([float(r["confidence"]) for r in rows])
    except (KeyError, ValueError) as exc:
        raise CnnlabError(f"{path} is not a predictions table of {dataset.name} (bad value "
                          f"{exc}); {rerun}") from exc
    labels = dataset.split(split).labels
    if order != list(range(len(labels))) or not np.array_equal(true, labels):
        raise CnnlabError(f"{path} does not match the {split} split of {dataset.name} "
                          f"({len(rows)} rows, {len(labels)} images): it is stale, {rerun}")
    return Predictions(true, predicted, confidence)


def _layer_labels(model: nn.Module) -> dict[str, str]:
    """Display names of the layers with weights, input side first, keyed by module name (the
    name cnnlab.train.loop.layer_grad_norms logs). A named layer keeps its name (conv1, fc2); an
    unnamed one in an nn.Sequential gets its kind and place, e.g. "conv2 (3)", "fc1 (7)"."""
    labels: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if not name or not isinstance(getattr(module, "weight", None), nn.Parameter):
            continue
        kind = {nn.Conv2d: "conv", nn.Linear: "fc"}.get(type(module), type(module).__name__)
        counts[kind] = counts.get(kind, 0) + 1
        named = any(c.isalpha() for c in name.rsplit(".", 1)[-1])
        labels[name] = name if named else f"{kind}{counts[kind]} ({name})"
    return labels


# -- drawing, one group of figures at a time ------------------------------------------------

def _describe_augment(exp: Experiment) -> str:
    aug = exp.augment
    names = {"hflip": "horizontal flip p=0.5" if aug.hflip else None,
             "crop": f"random crop, padding {aug.crop_padding}" if aug.crop_padding else None,
             "autoaugment": f"AutoAugment ({aug.autoaugment} policy, per image)"
             if aug.autoaugment != "none" else None}
    return ", ".join(names[op] for op in aug.order if names[op]) or NO_AUGMENT


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def _first_batch(exp: Experiment, train: Split) -> tuple[np.ndarray, list[int]]:
    """The start of the first training batch exactly as train() draws it on the CPU (same
    subset, same generator: shuffle, then augment, then normalise), un-normalised for display."""
    gen = torch.Generator().manual_seed(exp.seed)
    images, labels = next(DeviceSplit(train, torch.device("cpu")).batches(exp.batch_size, gen))
    x = model_input(images, exp, gen)
    shown = to_display(x[:BATCH_SHOWN].numpy(), exp.normalize.mean, exp.normalize.std)
    return shown, labels[:BATCH_SHOWN].tolist()


def _data_figures(exp: Experiment, name: str, dataset: ExperimentData, out: Path) -> list[Path]:
    train, classes = dataset.split("train"), dataset.classes
    samples = [None if i is None else train.images[i]
               for i in first_index_per_class(train.labels, len(classes))]
    counts = {split: class_counts(s.labels, len(classes)) for split, s in dataset.splits.items()}
    # The experiment's own augmentation, seeded like training, on copies of one image.
    copies = _as_nchw(train.images[:1]).repeat(AUGMENTED_VERSIONS, 1, 1, 1)
    augmented = augment_batch(copies, exp.augment, torch.Generator().manual_seed(exp.seed))
    batch, labels = _first_batch(exp, train)
    augment = _describe_augment(exp)
    return [
        figures.samples_per_class_figure(
            samples, classes, out / "samples_per_class.png",
            f"{name}: one training image per class ({dataset.name})"),
        figures.class_distribution_figure(
            counts, classes, out / "class_distribution.png",
            f"{name}: images per class ({dataset.name})"),
        figures.augmentation_figure(
            train.images[0], list(augmented.permute(0, 2, 3, 1).numpy()),
            out / "augmentation_demo.png",
            f"{name}: training augmentation ({augment}), seed {exp.seed}" if augment != NO_AUGMENT
            else f"{name}: no training augmentation: the model sees each image as it is"),
        figures.input_batch_figure(
            list(batch), [classes[i] for i in labels], out / "input_batch.png",
            f"{name}: first {len(batch)} images of the first training batch "
            f"(batch size {exp.batch_size}) as the model sees them: {augment}, then "
            f"normalised (shown un-normalised)"),
    ]


def _best_mark(exp: Experiment, logs: Logs) -> tuple[int, float, str] | None:
    """The best eval-split accuracy of the per-epoch log and its epoch, as a figure mark."""
    best = best_point(*logs.epoch.get(f"{exp.eval_split}_accuracy", ([], [])))
    if best is None:
        return None
    epoch, accuracy = best
    return epoch, accuracy, f"best {exp.eval_split} accuracy {accuracy:.2%}\nat epoch {epoch}"


def _training_figures(exp: Experiment, name: str, logs: Logs, layers: dict[str, str],
                      views: StudyViews, out: Path) -> list[Path]:
    def per_epoch(kind: str) -> dict[str, tuple[list[int], list[float]]]:
        # train_loss -> "train", val_accuracy -> "val": the legend names the split
        return {stem.replace(f"_{kind}", "") or stem: series
                for stem, series in logs.epoch.items() if kind in stem}

    mark = _best_mark(exp, logs) if views.mark_best_epoch else None
    written = [
        figures.loss_figure(*logs.loss, out / "loss_steps.png", f"{name}: training loss",
                            exp.log_every),
        figures.epoch_figure(per_epoch("loss"), out / "loss_epochs.png",
                             f"{name}: loss per epoch", "mean loss"),
        figures.epoch_figure(per_epoch("accuracy"), out / "accuracy_epochs.png",
                             f"{name}: accuracy per epoch{', best epoch marked' if mark else ''}",
                             "accuracy", ylim=(0, 1), mark=mark),
        figures.lr_figure(*logs.lr, out / "lr_schedule.png",
                          f"{name}: learning rate ({exp.optimizer.name})"),
    ]
    if logs.grad_norms:
        rank = {layer: i for i, layer in enumerate(layers)}  # the model's order, input first
        ordered = {layers.get(layer, layer): series for layer, series in sorted(
            logs.grad_norms.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))}
        written.append(figures.grad_norm_steps_figure(
            ordered, out / "grad_norms.png", f"{name}: weight-gradient norm per layer"))
    return written


def _evaluation_figures(exp: Experiment, name: str, classes: tuple[str, ...],
                        images: np.ndarray, preds: Predictions, out: Path) -> list[Path]:
    split = exp.eval_split
    true, predicted = preds.true, preds.predicted
    matrix = confusion_counts(true, predicted, len(classes))  # rows true, columns predicted
    right = true == predicted

    def examples(indices: list[int], file: str, title: str) -> Path:
        return _examples(classes, images, preds, indices, out / file, title)

    # Drawn across the split, not its first rows: ImageFolder splits are sorted by class, so the
    # first 16 mistakes would all share one true class.
    wrong = sample_indices(~right, MISCLASSIFIED, exp.seed + 1)
    return [
        figures.confusion_figure(
            matrix, classes, out / "confusion_counts.png",
            f"{name}: confusion matrix ({split}, {len(true):,} images)"),
        figures.confusion_figure(
            matrix, classes, out / "confusion_normalized.png",
            f"{name}: confusion matrix, rows normalised ({split})", normalize=True),
        figures.classification_report_figure(
            classification_report_rows(true, predicted, classes),
            out / "classification_report.png", f"{name}: classification report ({split})"),
        figures.per_class_accuracy_figure(
            classification_metrics(true, predicted, classes).per_class,
            out / "per_class_accuracy.png", f"{name}: accuracy per class ({split})"),
        figures.most_confused_figure(
            most_confused_pairs(matrix, classes, CONFUSED_PAIRS), out / "most_confused.png",
            f"{name}: most confused pairs, true → predicted ({split})"),
        examples(sample_indices(right, EXAMPLES, exp.seed), "predictions_correct.png",
                 f"{name}: correct predictions ({split}, random, seed {exp.seed})"),
        examples(sample_indices(~right, EXAMPLES, exp.seed), "predictions_incorrect.png",
                 f"{name}: incorrect predictions ({split}, random, seed {exp.seed})"),
        examples(wrong, "misclassified_16.png",
                 f"{name}: {len(wrong)} misclassified {split} images, random "
                 f"(T: true, P: predicted)"),
    ]


def _examples(classes: tuple[str, ...], images: np.ndarray, preds: Predictions,
              indices: list[int], path: Path, title: str, columns: int = 4) -> Path:
    """The eval images at `indices` with their true and predicted class and confidence."""
    return figures.predictions_figure(
        [images[i] for i in indices], [classes[preds.true[i]] for i in indices],
        [classes[preds.predicted[i]] for i in indices],
        [float(preds.confidence[i]) for i in indices], path, title, columns)


def _study_figures(exp: Experiment, name: str, views: StudyViews, train: Split,
                   classes: tuple[str, ...], images: np.ndarray, preds: Predictions, out: Path
                   ) -> list[Path]:
    """What the experiment's study drew with its own choice of examples: the first n, in the
    split's order (`train` is the prepared train split, before any hold-out or subset)."""
    split, written = exp.eval_split, []
    if views.first_predictions:
        n = views.first_predictions
        written.append(_examples(
            classes, images, preds, first_indices(len(preds.true), n),
            out / f"predictions_first_{n}.png",
            f"{name}: the first {n} {split} images and their predictions (green: right, red: "
            f"wrong)"))
    if views.first_train_images:
        n = views.first_train_images
        picked = first_indices(len(train.labels), n)
        written.append(figures.labelled_images_figure(
            [train.images[i] for i in picked], [classes[train.labels[i]] for i in picked],
            out / f"train_first_{n}.png", f"{name}: the first {n} training images", columns=n))
    if views.first_each_outcome:
        n, right = views.first_each_outcome, preds.true == preds.predicted
        for outcome, mask in (("correct", right), ("incorrect", ~right)):
            written.append(_examples(
                classes, images, preds, first_where(mask, n), out / f"{outcome}_first_{n}.png",
                f"{name}: the first {n} {outcome} predictions ({split})", columns=n))
    return written


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d with its display label, input side first."""
    labels = _layer_labels(model)
    return [(labels[n], m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def _feature_maps(model: nn.Module, image: np.ndarray, exp: Experiment
                  ) -> dict[str, np.ndarray]:
    """Each Conv2d's output (C, H, W) for one image, in the order the forward pass runs them."""
    maps: dict[str, np.ndarray] = {}

    def keep(label: str):
        return lambda _module, _inputs, output: maps.__setitem__(label, output[0].numpy())

    hooks = [module.register_forward_hook(keep(label)) for label, module in _convs(model)]
    try:
        model(model_input(_as_nchw(image[None]), exp))
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def _model_figures(exp: Experiment, name: str, model: nn.Module, image: np.ndarray,
                   filters: int, out: Path) -> list[Path]:
    convs = _convs(model)
    if not convs:  # an MLP has no filters or feature maps to show
        return []
    label, first = convs[0]
    weights = first.weight.detach().numpy()
    return [
        figures.filters_figure(
            weights, out / "filters_conv1.png",
            f"{name}: first-layer filters ({label}, the first {min(len(weights), filters)} of "
            f"{len(weights)}, each scaled to its own range)", limit=filters),
        figures.feature_maps_figure(
            image, _feature_maps(model, image, exp), out / "feature_maps.png",
            f"{name}: feature maps of the first {exp.eval_split} image (conv outputs, first "
            f"{FEATURE_CHANNELS} channels)", channels=FEATURE_CHANNELS),
    ]
