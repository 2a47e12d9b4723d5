"""The one training loop every experiment runs through.

`train()` takes a validated Experiment and a prepared dataset and returns the trained model and
its logs; it does no file I/O, so tests call it directly and the stage script stays thin. Loss and
accuracy accumulate on the device and are read back only at logging points, so a GPU never waits
on the host inside the step loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.augment import augment_batch, normalize
from cnnlab.config import Experiment
from cnnlab.data.loader import DeviceSplit, seeded_subset
from cnnlab.data.prepared import PreparedDataset
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model
from cnnlab.optim import build_optimizer


class TrainLogger(Protocol):
    """Where the loop reports progress; cnnlab.tracking writes it with dvclive."""

    def log_step(self, step: int, loss: float, lr: float) -> None: ...

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None: ...

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None: ...


@dataclass
class TrainResult:
    model: nn.Module
    train_seconds: float
    epochs: int
    train_images: int
    steps: int
    images_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch


def train(
    exp: Experiment,
    dataset: PreparedDataset,
    device: torch.device,
    logger: TrainLogger | None = None,
    progress: bool = True,
    name: str = "train",
    eval_split: str | None = None,
) -> TrainResult:
    """Train `exp`; with `eval_split`, also score that split after every epoch (outside the
    timed training, so seconds per epoch stay comparable)."""
    torch.manual_seed(exp.seed)  # model initialisation
    gen = torch.Generator(device=device).manual_seed(exp.seed)  # shuffling and augmentation
    train_split = dataset.split("train")
    data = DeviceSplit(train_split, device, seeded_subset(len(train_split), exp.train_subset,
                                                          exp.seed))
    eval_data = DeviceSplit(dataset.split(eval_split), device) if eval_split else None
    model = build_model(exp.model, len(dataset.classes)).to(device)
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], exp.optimizer)

    steps_per_epoch = data.num_batches(exp.batch_size)
    step, history = 0, []
    window_loss = torch.zeros((), device=device)  # loss summed since the last log point
    window_steps = 0
    for epoch in range(1, exp.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        epoch_loss = torch.zeros((), device=device)
        epoch_correct = torch.zeros((), device=device, dtype=torch.long)
        bar = tqdm(total=steps_per_epoch, desc=f"{name} {epoch}/{exp.epochs}", unit="step",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for images, labels in data.batches(exp.batch_size, gen):
            x = normalize(augment_batch(images, exp.augment, gen), exp.normalize)
            logits = model(x)
            loss = F.cross_entropy(logits, labels, label_smoothing=exp.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            step += 1
            window_steps += 1
            batch_loss = loss.detach()
            window_loss += batch_loss
            epoch_loss += batch_loss * len(labels)
            epoch_correct += (logits.detach().argmax(1) == labels).sum()
            bar.update()
            if step % exp.log_every == 0:
                mean_loss = _read_loss(window_loss / window_steps, step)
                window_loss.zero_()
                window_steps = 0
                if logger:
                    logger.log_step(step, mean_loss, optimizer.param_groups[0]["lr"])
                    if exp.log_grad_norms:
                        logger.log_grad_norms(step, layer_grad_norms(model))
                seen = bar.n * exp.batch_size
                bar.set_postfix(loss=f"{mean_loss:.4f}",
                                img_s=f"{seen / (time.perf_counter() - epoch_start):.0f}")
        bar.close()
        seconds = time.perf_counter() - epoch_start
        row = {
            "epoch": epoch,
            "train_loss": _read_loss(epoch_loss / len(data), step),
            "train_accuracy": epoch_correct.item() / len(data),
            "epoch_seconds": seconds,
            "images_per_second": len(data) / seconds,
        }
        if eval_data is not None:
            row.update(score(model, eval_data, exp, eval_split))
        history.append(row)
        if logger:  # timings go to the run summary, not to plots
            logger.log_epoch(epoch, step, {k: v for k, v in row.items()
                                           if k.endswith(("_loss", "_accuracy"))})
        if progress:
            tqdm.write(f"{name} epoch {epoch}/{exp.epochs}: loss {row['train_loss']:.4f}  "
                       f"train acc {row['train_accuracy']:.4f}  {seconds:.1f}s  "
                       f"{row['images_per_second']:.0f} img/s")
    train_seconds = sum(row["epoch_seconds"] for row in history)  # per-epoch scoring excluded
    return TrainResult(model.eval(), train_seconds, exp.epochs, len(data), step,
                       len(data) * exp.epochs / train_seconds, history)


@torch.no_grad()
def score(model: nn.Module, data: DeviceSplit, exp: Experiment, split: str) -> dict[str, float]:
    """Mean loss and accuracy of `model` on a whole split, in eval mode (then back to train)."""
    model.eval()
    loss = torch.zeros((), device=data.device)
    correct = torch.zeros((), device=data.device, dtype=torch.long)
    for images, labels in data.batches(1000):
        logits = model(normalize(images, exp.normalize))
        loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    model.train()
    n = len(data)
    return {f"{split}_loss": loss.item() / n, f"{split}_accuracy": correct.item() / n}


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each layer's weight gradient, keyed by layer name (conv1, fc2, ...)."""
    named = [(name.removesuffix(".weight"), p.grad) for name, p in model.named_parameters()
             if name.endswith("weight") and p.grad is not None]
    norms = torch.stack([g.detach().norm() for _, g in named]).tolist()  # one host sync
    return {name: norm for (name, _), norm in zip(named, norms, strict=True)}


def _read_loss(loss: torch.Tensor, step: int) -> float:
    """Bring a loss to the host, failing fast when training has diverged."""
    value = loss.item()
    if not math.isfinite(value):
        raise CnnlabError(f"loss became {value} by step {step}: training diverged "
                          f"(try a lower learning rate)")
    return value
