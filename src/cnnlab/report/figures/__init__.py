"""Figures as pure drawing functions: arrays, lists and dicts in, one PNG out.

Nothing here reads a file or computes a result: cnnlab.report.figure_sets gathers the inputs from
saved artifacts, cnnlab.report.figure_data computes what needs computing, and every experiment
draws each kind of figure with the same function. Each writes its PNG atomically at a size fixed
by its inputs, and the same inputs give byte-identical files (see _save.py).

- dataset: samples per class, labelled images, class distribution, augmentation demo, the model's
  input batch;
- training: loss per step, loss curves of several runs, per-epoch curves (optionally one point
  marked), the learning rate, gradient norms per layer (over steps, and per-run means);
- evaluation: confusion matrix (counts or row-normalised), classification report, per-class
  accuracy, most-confused pairs, example predictions;
- model: first-layer filters and feature maps.
"""

from cnnlab.report.figures.dataset import (
    augmentation_figure,
    class_distribution_figure,
    input_batch_figure,
    labelled_images_figure,
    samples_per_class_figure,
)
from cnnlab.report.figures.evaluation import (
    classification_report_figure,
    confusion_figure,
    most_confused_figure,
    per_class_accuracy_figure,
    predictions_figure,
)
from cnnlab.report.figures.model import feature_maps_figure, filters_figure
from cnnlab.report.figures.training import (
    epoch_figure,
    grad_norm_steps_figure,
    grad_norms_figure,
    loss_curves_figure,
    loss_figure,
    lr_figure,
)

__all__ = [
    "augmentation_figure",
    "class_distribution_figure",
    "classification_report_figure",
    "confusion_figure",
    "epoch_figure",
    "feature_maps_figure",
    "filters_figure",
    "grad_norm_steps_figure",
    "grad_norms_figure",
    "input_batch_figure",
    "labelled_images_figure",
    "loss_curves_figure",
    "loss_figure",
    "lr_figure",
    "most_confused_figure",
    "per_class_accuracy_figure",
    "predictions_figure",
    "samples_per_class_figure",
]
