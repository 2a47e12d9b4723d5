"""The studies' own way of training, kept as the reference that benchmarks/train_speed.py times
cnnlab against: a torch DataLoader with worker processes, per-image PIL transforms from
torchvision (AutoAugment included), float32 throughout, and a `loss.item()` every step for the
running loss, as study 003's notebook does (../shared/seeds/003_*.txt, cells 438-552 and 888-930).

It trains the same model with the same optimizer, scheduler, label smoothing, MixUp and clipping as
the experiment's params, so the two loops differ only in how they feed and step the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cnnlab.config import Experiment
from cnnlab.data.prepared import Split


class ImageArray(Dataset):
    """uint8 (N, H, W, 3) images served one PIL image at a time, as torchvision's CIFAR10 does."""

    def __init__(self, split: Split, transform: transforms.Compose):
        self.images, self.labels, self.transform = split.images, split.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def train_transform(exp: Experiment, size: int) -> transforms.Compose:
    """The experiment's augmentation as the studies wrote it: torchvision's per-image ops in
    exp.augment.order, then resize/crop, ToTensor and Normalize."""
    ops = {
        "hflip": transforms.RandomHorizontalFlip() if exp.augment.hflip else None,
        "crop": (transforms.RandomCrop(size, padding=exp.augment.crop_padding)
                 if exp.augment.crop_padding else None),
        "autoaugment": (transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)
                        if exp.augment.autoaugment == "cifar10" else None),
    }
    chosen = [ops[name] for name in exp.augment.order if ops.get(name) is not None]
    return transforms.Compose([*chosen, *_tail(exp)])


def eval_transform(exp: Experiment) -> transforms.Compose:
    return transforms.Compose(_tail(exp))


def _tail(exp: Experiment) -> list:
    tail = []
    if exp.preprocess.resize:
        tail.append(transforms.Resize(exp.preprocess.resize, antialias=True))
    if exp.preprocess.center_crop:
        tail.append(transforms.CenterCrop(exp.preprocess.center_crop))
    normalize = transforms.Normalize(exp.normalize.mean, exp.normalize.std)
    return [*tail, transforms.ToTensor(), normalize]


def loader(split: Split, transform, batch_size: int, workers: int, shuffle: bool,
           device: torch.device, seed: int) -> DataLoader:
    return DataLoader(ImageArray(split, transform), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(seed))


@dataclass
class EpochTiming:
    images: int
    seconds: float
    loss: float
    accuracy: float


def train_epoch(model, batches: DataLoader, optimizer, schedule, exp: Experiment,
                device: torch.device, trainable) -> EpochTiming:
    """One epoch as study 003 runs it (mixup_data, mixup_criterion, running loss by .item())."""
    model.train()
    start = time.perf_counter()
    running_loss, correct, seen = 0.0, 0.0, 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if exp.mixup_alpha > 0:
            lam = float(np.random.beta(exp.mixup_alpha, exp.mixup_alpha))
            index = torch.randperm(images.size(0), device=device)
            mixed = lam * images + (1 - lam) * images[index]
            outputs = model(mixed)
            loss = (lam * F.cross_entropy(outputs, labels, label_smoothing=exp.label_smoothing)
                    + (1 - lam) * F.cross_entropy(outputs, labels[index],
                                                  label_smoothing=exp.label_smoothing))
            predicted = outputs.argmax(1)
            correct += (lam * (predicted == labels).sum().item()
                        + (1 - lam) * (predicted == labels[index]).sum().item())
        else:
            outputs = model(images)
            loss = F.cross_entropy(outputs, labels, label_smoothing=exp.label_smoothing)
            correct += (outputs.argmax(1) == labels).sum().item()
        optimizer.zero_grad()
        loss.backward()
        if exp.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, exp.grad_clip_norm)
        optimizer.step()
        schedule.after_batch()
        running_loss += loss.item() * labels.size(0)  # a host sync every step, as the study
        seen += labels.size(0)
    schedule.after_epoch()
    _sync(device)
    return EpochTiming(seen, time.perf_counter() - start, running_loss / seen, correct / seen)


@torch.no_grad()
def evaluate(model, batches: DataLoader, device: torch.device) -> tuple[float, int, float]:
    """(accuracy, images, seconds) over a test loader, as the study's evaluate()."""
    model.eval()
    start = time.perf_counter()
    correct, seen = 0, 0
    for images, labels in batches:
        outputs = model(images.to(device, non_blocking=True))
        correct += (outputs.argmax(1).cpu() == labels).sum().item()
        seen += labels.size(0)
    return correct / seen, seen, time.perf_counter() - start


def augment_only(batches: DataLoader) -> tuple[int, float]:
    """(images, seconds) to produce one epoch of augmented, normalised batches, no model."""
    start = time.perf_counter()
    seen = sum(labels.size(0) for _, labels in batches)
    return seen, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
