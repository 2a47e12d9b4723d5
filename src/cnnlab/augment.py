"""Batched augmentation on uint8 image tensors (B, C, H, W), on whatever device they live on.

Every op draws its randomness for the whole batch at once from one torch.Generator, so a batch
costs a few tensor ops instead of a Python call per image, and the seed fixes every choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlab.config import Augment, Normalize


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
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # B,1,H,1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # B,1,1,W
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def augment_batch(x: torch.Tensor, cfg: Augment, gen: torch.Generator) -> torch.Tensor:
    """The experiment's training augmentation, in the study's order: flip, then crop."""
    if cfg.hflip:
        x = random_hflip(x, gen)
    if cfg.crop_padding:
        x = random_crop(x, cfg.crop_padding, gen)
    return x


def normalize(x: torch.Tensor, cfg: Normalize) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1] -> (x - mean) / std per channel, as ToTensor+Normalize."""
    mean = torch.tensor(cfg.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - mean) / std
