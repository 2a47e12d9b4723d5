"""Trained weights back into their model, for the evaluate and figures stages, and the one way
every checkpoint cnnlab writes is read back: torch.load(weights_only=True)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.config import Experiment
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model

# torch names the first object its weights-only unpickler refused, e.g. "GLOBAL posix.system".
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeCheckpoint(CnnlabError):
    """A checkpoint that refers to Python objects beyond tensors and plain containers."""


def read_tensors(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers, never code. A file that
    names any other Python object (as a pickled class whose __reduce__ runs a command does) is
    refused with UnsafeCheckpoint before anything in it runs; any other unreadable file is a
    CnnlabError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused:
            raise UnsafeCheckpoint(
                f"{path} holds a pickled Python object ({refused.group(1)}), not only tensors: "
                f"refused, as unpickling it could run code (checkpoints are read with "
                f"torch.load(weights_only=True))") from exc
        raise CnnlabError(f"{path} is not a torch checkpoint (it does not unpickle as "
                          f"tensors)") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # a damaged zip, a short file
        # torch's own message runs to several sentences: its first says what is wrong.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise CnnlabError(f"{path} is not a readable torch checkpoint ({reason})") from exc


def load_model(exp: Experiment, name: str, num_classes: int, checkpoint: Path,
               device: torch.device | str = "cpu") -> nn.Module:
    """Experiment `name`'s architecture (with its freezing, no pretrained download) holding the
    state dict saved at `checkpoint`, in eval mode."""
    if not checkpoint.is_file():
        raise CnnlabError(f"{checkpoint} not found (run `dvc repro train@{name}` first)")
    model = build_model(exp.model, num_classes)
    state = read_tensors(checkpoint)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:  # another model, or not a dict
        raise CnnlabError(f"{checkpoint} does not fit model {exp.model!r} with {num_classes} "
                          f"classes (run `dvc repro train@{name}`)") from exc
    return model.to(device).eval()
