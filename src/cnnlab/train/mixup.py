"""MixUp (Zhang et al. 2018) as study 003 applies it: one lambda ~ Beta(alpha, alpha) per batch,
each image mixed with the image a random permutation pairs it with, and the loss mixed the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class MixUp:
    """Draws the per-batch lambda from its own seeded NumPy stream: a host-side number, so drawing
    it never waits on the device, and the permutation from the training generator."""

    def __init__(self, alpha: float, seed: int):
        self.alpha = alpha
        self.rng = np.random.default_rng([seed, 0x6D6978])  # "mix": apart from other streams

    def draw(self, batch: int, gen: torch.Generator, device: torch.device
             ) -> tuple[float, torch.Tensor]:
        lam = float(self.rng.beta(self.alpha, self.alpha))
        return lam, torch.randperm(batch, generator=gen, device=device)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state  # plain ints and strings: loads with weights_only

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def mix(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    return lam * x + (1 - lam) * x[perm]


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, lam: float, perm: torch.Tensor,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """lam * CE(y) + (1 - lam) * CE(y[perm]), the mixed images' loss."""
    return (lam * F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
            + (1 - lam) * F.cross_entropy(logits, labels[perm], label_smoothing=label_smoothing))


def mixed_correct(logits: torch.Tensor, labels: torch.Tensor, lam: float, perm: torch.Tensor
                  ) -> torch.Tensor:
    """Correct predictions weighted as the study counts them under MixUp (a float tensor)."""
    predicted = logits.argmax(1)
    return (lam * (predicted == labels).sum() + (1 - lam) * (predicted == labels[perm]).sum())
