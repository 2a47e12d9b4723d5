"""Run a trained model over a split and turn its predictions into the metrics contract."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.augment import eval_batch_size, model_input
from cnnlab.config import Experiment
from cnnlab.data.loader import DeviceSplit
from cnnlab.fastpath import as_input, autocast, resolve_fastpath
from cnnlab.memory import scoring_memory


@scoring_memory  # out of memory: one line naming the batch size
@torch.no_grad()
def predict(model: nn.Module, data: DeviceSplit, exp: Experiment, batch_size: int | None = None
            ) -> np.ndarray:
    """Class probabilities (N, num_classes) as float32, in the split's order, the images
    preprocessed and normalised as `exp` trains on them (not augmented)."""
    model.eval()
    fast = resolve_fastpath(exp.speed, data.device)
    chunks = []
    for images, _ in data.batches(batch_size or eval_batch_size(exp)):
        with autocast(fast):
            logits = model(as_input(model_input(images, exp), fast))
        chunks.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(chunks).cpu().numpy()


def predictions_table(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
                      ) -> list[dict[str, object]]:
    """Rows for predictions.csv: what `dvc plots` draws the confusion matrix from."""
    predicted = probs.argmax(1)
    return [
        {"index": i, "actual": classes[t], "predicted": classes[p],
         "confidence": round(float(probs[i, p]), 6)}
        for i, (t, p) in enumerate(zip(labels.tolist(), predicted.tolist(), strict=True))
    ]
