"""Study 001's transfer-learning models: torchvision's VGG16 and ResNet18, ImageNet
weights, fine-tuned on CIFAR-10 resized to 256 and centre-cropped to 224 (recipe B).

`weights` says where the starting weights come from:
  "none"      random initialisation (tests, offline runs);
  "imagenet"  torchvision's published ImageNet weights, downloaded once into torch.hub's cache
              (<TORCH_HOME>/hub/checkpoints) by torchvision's own loader, hash-checked;
  otherwise   the path of a local file holding that same state dict (e.g. the weights' URL
              downloaded by hand on a connected machine).
Weights are loaded into the 1000-class ImageNet layout with strict key and shape checks, and only
then is the head replaced and the study's freezing applied. Freezing does not depend on `weights`,
so a `weights: none` run trains exactly the parameters an ImageNet run would.

torchvision is imported inside the factories: importing the registry should stay cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.registry import NO_WEIGHTS, register

IMAGENET = "imagenet"


@register("vgg16_tl", pretrained=True)
def vgg16_tl(num_classes: int, weights: str = NO_WEIGHTS) -> nn.Module:
    from torchvision.models import VGG16_Weights, vgg16

    state = _initial_state("vgg16_tl", weights, VGG16_Weights.DEFAULT)
    # Skip torchvision's own init when every tensor is about to be overwritten anyway.
    model = vgg16(weights=None, init_weights=state is None)
    _load(model, state, "vgg16_tl", weights, VGG16_Weights.DEFAULT.url)
    # The study froze all of `features`, then unfroze features[24:]: conv5_1..conv5_3 (and
    # their parameter-free ReLUs and pool). The classifier was never frozen.
    model.features.requires_grad_(False)
    model.features[24:].requires_grad_(True)
    model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
    return model


@register("resnet18_tl", pretrained=True)
def resnet18_tl(num_classes: int, weights: str = NO_WEIGHTS) -> nn.Module:
    from torchvision.models import ResNet18_Weights, resnet18

    state = _initial_state("resnet18_tl", weights, ResNet18_Weights.DEFAULT)
    model = resnet18(weights=None)
    _load(model, state, "resnet18_tl", weights, ResNet18_Weights.DEFAULT.url)
    # The study froze everything, unfroze layer4, and the new head is trainable by default.
    model.requires_grad_(False)
    model.layer4.requires_grad_(True)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _initial_state(name: str, weights: str, imagenet: Any) -> dict[str, torch.Tensor] | None:
    """The ImageNet-layout state dict that `weights` names, or None for random init.

    Read before the model is built, so a bad setting fails before VGG16's 138M parameters are
    allocated and initialised.
    """
    if weights == NO_WEIGHTS:
        return None
    if weights == IMAGENET:
        return _fetch_imagenet(name, imagenet)
    return _read_file(name, weights, imagenet.url)


def _fetch_imagenet(name: str, imagenet: Any) -> dict[str, torch.Tensor]:
    """torchvision's weights API: torch.hub's cache, or a download into it (hash-checked)."""
    url = imagenet.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    was_cached = cached.is_file()
    try:
        return imagenet.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as exc:  # network, HTTP, hash and unpickling errors all land here
        if was_cached:
            # A download is never left half-written under the final name (torch.hub writes a
            # temporary file and renames it), so a bad cached file was put there by something else.
            raise CnnlabError(
                f"the cached ImageNet weights for {name} at {cached} could not be read "
                f"({_reason(exc)}); delete that file to download it again from {url}"
            ) from exc
        raise CnnlabError(
            f"the ImageNet weights for {name} could not be fetched from {url} ({_reason(exc)}); "
            f"to supply them locally, download that URL on a connected machine and set "
            f"experiments.<exp>.weights to the file's path (or use `weights: none` for random "
            f"initialisation)"
        ) from exc


def _read_file(name: str, path: str, url: str) -> dict[str, torch.Tensor]:
    """A local state dict in torchvision's ImageNet layout, read without unpickling code."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CnnlabError(
            f"weights file {path!r} for {name} does not exist (weights must be "
            f"'{IMAGENET}', '{NO_WEIGHTS}' or the path of a state dict file, e.g. {url})"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on arbitrary files
        raise CnnlabError(
            f"weights file {path!r} for {name} is not a torch state dict ({_reason(exc)})"
        ) from exc
    if not isinstance(state, Mapping):
        raise CnnlabError(
            f"weights file {path!r} for {name} holds a {type(state).__name__}, "
            f"not a state dict (parameter name -> tensor)"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CnnlabError(
                f"weights file {path!r} for {name} is not a plain state dict: entry {key!r} is "
                f"a {type(value).__name__}, not a tensor"
            )
    return dict(state)


def _load(
    model: nn.Module, state: dict[str, torch.Tensor] | None, name: str, weights: str, url: str
) -> None:
    """Load `state` strictly, after naming the first mismatch in one line ourselves.

    load_state_dict's own error lists every key over many lines; a user needs the first one.
    """
    if state is None:
        return
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            problems.append(
                f"{key!r} has shape {list(value.shape)} in the file but "
                f"{list(expected[key].shape)} in the model"
            )
            break
    if problems:
        source = "ImageNet weights" if weights == IMAGENET else f"weights file {weights!r}"
        raise CnnlabError(
            f"{source} for {name} do not match torchvision's ImageNet layout "
            f"(as published at {url}): {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=True)


def _reason(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
