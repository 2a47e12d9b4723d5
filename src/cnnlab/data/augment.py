"""Batched augmentation on uint8 image tensors (B, C, H, W), on whatever device they live on.

Every op draws its randomness for the whole batch at once from one torch.Generator, so a batch
costs a few tensor ops instead of a Python call per image, and the seed fixes every choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.config import Augment, Experiment, Normalize, Preprocess
from cnnlab.data.autoaugment import autoaugment_cifar10
from cnnlab.errors import CnnlabError


def random_hflip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right independently with probability p."""
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a random HxW window per image (torchvision's RandomCrop)."""
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen, device=x.device)
    # One gather over the flattened padded image: each output pixel's offset inside its image.
    # About 5x faster on the CPU than indexing with four broadcast index tensors.
    width = w + 2 * padding
    rows = dy[:, None, None] + torch.arange(h, device=x.device)[None, :, None]  # B,H,1
    cols = dx[:, None, None] + torch.arange(w, device=x.device)[None, None, :]  # B,1,W
    offsets = (rows * width + cols).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, offsets).view(b, c, h, w)


def augment_batch(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """The experiment's training augmentation of uint8 images, its ops in `cfg.order`."""
    for op in cfg.order:
        if op == "hflip" and cfg.hflip:
            x = random_hflip(x, gen)
        elif op == "crop" and cfg.crop_padding:
            x = random_crop(x, cfg.crop_padding, gen)
        elif op == "autoaugment" and cfg.autoaugment == "cifar10":
            x = autoaugment_cifar10(x, gen)
    return x


def preprocess(x: torch.Tensor, cfg: Preprocess) -> torch.Tensor:
    """Resize (bilinear, antialiased, as torchvision's Resize on tensors) and centre-crop.
    Returns float pixels in 0..255 when it resizes, with no rounding back to uint8, as the
    study's float pipeline had it; the input unchanged otherwise."""
    if cfg.resize is not None:
        x = F.interpolate(x.float(), size=(cfg.resize, cfg.resize), mode="bilinear",
                          align_corners=False, antialias=True)
    if cfg.center_crop is not None:
        h, w = x.shape[-2:]
        if cfg.center_crop > min(h, w):
            raise CnnlabError(f"preprocess.center_crop {cfg.center_crop} is larger than the "
                              f"{h}x{w} images")
        top, left = (h - cfg.center_crop) // 2, (w - cfg.center_crop) // 2
        x = x[..., top:top + cfg.center_crop, left:left + cfg.center_crop]
    return x


def normalize(x: torch.Tensor, cfg: Normalize) -> torch.Tensor:
    """Pixels 0..255 (uint8 or float) -> [0, 1] -> (x - mean) / std per channel, as
    ToTensor + Normalize. Never writes into `x`."""
    mean = torch.tensor(cfg.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - mean) / std


def model_input(images: torch.Tensor, exp: Experiment,
                gen: torch.Generator | None = None) -> torch.Tensor:
    """uint8 images -> what the model sees: augmented when `gen` is given (training; before
    or after the preprocessing, as augment.after_preprocess says), preprocessed and
    normalised. Training, evaluation and the figures all go through here."""
    late = exp.augment.after_preprocess
    if gen is not None and not late:
        images = augment_batch(images, exp.augment, gen)
    x = preprocess(images, exp.preprocess)
    if gen is not None and late:  # study 001's order: augment at the model's input size
        x = augment_batch(as_pixels(x), exp.augment, gen)
    return normalize(x, exp.normalize)


def as_pixels(x: torch.Tensor) -> torch.Tensor:
    """Resized float pixels (0..255) rounded back to uint8, which the augmentation ops take."""
    return x if x.dtype == torch.uint8 else x.round().clamp(0, 255).to(torch.uint8)

