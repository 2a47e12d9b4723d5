"""The one scoring path: a trained model run over a whole split, in eval mode.

Per-epoch scoring inside training, the evaluate stage and the figures all call `predict`, so the
accuracy a run logs after its last epoch, the one in metrics/<exp>.json and the predictions the
figures draw are computed the same way: the images preprocessed and normalised as the experiment
trains on them (not augmented, unless asked for study 001's protocol), in its precision and
memory layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import Experiment
from cnnlab.data.augment import model_input
from cnnlab.data.loader import DeviceSplit
from cnnlab.fastpath import as_input, autocast, resolve_fastpath
from cnnlab.out_of_memory import scoring_memory


@dataclass(frozen=True)
class Predictions:
    """What a model says about every image of a split, in the split's order."""

    probs: np.ndarray  # (N, num_classes) float32 class probabilities
    labels: np.ndarray  # (N,) int64 true classes
    loss: float  # mean cross-entropy of the float32 logits (smoothed: exp.smoothed_eval_loss)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean())


@scoring_memory  # out of memory: one line naming the batch size
@torch.no_grad()
def predict(model: nn.Module, data: DeviceSplit, exp: Experiment, batch_size: int | None = None,
            augment: torch.Generator | None = None) -> Predictions:
    """Score `model` on all of `data`; the model's train/eval mode is put back afterwards.
    With `augment`, the images first go through the training augmentation drawn from it
    (study 001's protocol, exp.score_augmented). The loss is plain cross-entropy, or the
    label-smoothed one with exp.smoothed_eval_loss (study 003's)."""
    was_training = model.training
    model.eval()
    fast = resolve_fastpath(exp.speed, data.device)
    smoothing = exp.label_smoothing if exp.smoothed_eval_loss else 0.0
    loss = torch.zeros((), device=data.device)
    chunks = []
    for images, labels in data.batches(batch_size or exp.eval_batch_size()):
        with autocast(fast):
            logits = model(as_input(model_input(images, exp, augment), fast)).float()
        loss += F.cross_entropy(logits, labels, reduction="sum", label_smoothing=smoothing)
        chunks.append(torch.softmax(logits, dim=1))
    model.train(was_training)
    return Predictions(torch.cat(chunks).cpu().numpy(), data.labels.cpu().numpy(),
                       loss.item() / len(data))


def predictions_table(preds: Predictions, classes: tuple[str, ...]) -> list[dict[str, object]]:
    """Rows for predictions.csv: what `dvc plots` draws the confusion matrix from."""
    predicted = preds.predicted
    return [
        {"index": i, "actual": classes[t], "predicted": classes[p],
         "confidence": round(float(preds.probs[i, p]), 6)}
        for i, (t, p) in enumerate(zip(preds.labels.tolist(), predicted.tolist(), strict=True))
    ]
