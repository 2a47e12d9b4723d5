"""Trained weights back into their model, for the evaluate and figures stages."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnlab.config import Experiment
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model


def load_model(exp: Experiment, name: str, num_classes: int, checkpoint: Path,
               device: torch.device | str = "cpu") -> nn.Module:
    """Experiment `name`'s architecture (with its freezing, no pretrained download) holding the
    state dict saved at `checkpoint`, in eval mode. Read with weights_only=True: a checkpoint
    can hold tensors, never code."""
    if not checkpoint.is_file():
        raise CnnlabError(f"{checkpoint} not found (run `dvc repro train@{name}` first)")
    model = build_model(exp.model, num_classes)
    try:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    except RuntimeError as exc:  # a checkpoint of another model or class count
        raise CnnlabError(f"{checkpoint} does not fit model {exp.model!r} with {num_classes} "
                          f"classes (run `dvc repro train@{name}`)") from exc
    return model.to(device).eval()
