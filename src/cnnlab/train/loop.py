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

from cnnlab.data.augment import model_input
from cnnlab.config import Experiment
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import PreparedDataset
from cnnlab.data.selection import select_data
from cnnlab.train.distributed import SINGLE, Parallel
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.scoring import predict
from cnnlab.fastpath import (
    FastPath,
    as_input,
    autocast,
    backends,
    compiled,
    prepare_model,
    resolve_fastpath,
)
from cnnlab.out_of_memory import training_memory
from cnnlab.train.mixup import MixUp, mix, mixed_correct, mixed_cross_entropy
from cnnlab.models import build_model
from cnnlab.models.init import INITIALISERS
from cnnlab.train.optimizers import build_optimizer
from cnnlab.train.resume import ResumeFile
from cnnlab.train.schedulers import build_scheduler


class TrainLogger(Protocol):
    """Where the loop reports progress; cnnlab.train.training_log writes it with dvclive."""

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
    best_epoch: int | None = None  # keep_best: the epoch best on eval_split
    best_state: dict[str, torch.Tensor] | None = None  # its weights, on the CPU
    speed: str = ""  # what the fast path turned on, e.g. 'bf16 autocast, channels_last'


def epoch_splits(exp: Experiment) -> list[str]:
    """Splits scored after every epoch: the eval split and also_evaluate, but not train, whose
    loss and accuracy the epoch itself measures."""
    if not exp.eval_each_epoch:
        return []
    return [s for s in (exp.eval_split, *exp.also_evaluate) if s != "train"]


@training_memory  # out of memory: one line naming the batch size
def train(
    exp: Experiment,
    dataset: PreparedDataset,
    device: torch.device,
    logger: TrainLogger | None = None,
    progress: bool = True,
    name: str = "train",
    resume: ResumeFile | None = None,
    parallel: Parallel = SINGLE,
) -> TrainResult:
    """Train `exp` on its selection of `dataset` (cnnlab.data.selection). Per-epoch scoring
    runs outside the timed training, so seconds per epoch stay comparable. With `resume`, the
    state after each epoch is saved there, and a saved state of the same run is continued.
    Under torchrun, `parallel` is this rank (cnnlab.train.distributed): it trains its shard of every
    batch, the logged loss and accuracy are the ranks' together, and only rank 0 saves."""
    fast = resolve_fastpath(exp.speed, device)
    with backends(fast):  # cuDNN autotuning, determinism: this run's, restored after it
        return _train(exp, dataset, device, logger, progress, name, resume, parallel, fast)


def _train(exp: Experiment, dataset: PreparedDataset, device: torch.device,
           logger: TrainLogger | None, progress: bool, name: str, resume: ResumeFile | None,
           parallel: Parallel, fast: FastPath) -> TrainResult:
    data = select_data(exp, dataset)
    logger = _Recorder(logger)  # keeps what was logged, so a resumed run can replay it
    torch.manual_seed(exp.seed)  # model initialisation
    gen = torch.Generator(device=device).manual_seed(exp.seed)  # shuffling and augmentation
    train_data = DeviceSplit(data.split("train"), device)
    parallel.check_batches(len(train_data), exp.batch_size)
    scored = {split: DeviceSplit(data.split(split), device) for split in epoch_splits(exp)}
    model = build_model(exp.model, len(data.classes), weights=exp.weights)
    model = INITIALISERS[exp.init](model).to(device)
    prepare_model(model, fast)
    own_gen = parallel.own_generator(gen, exp.seed)  # `gen` itself on one process
    net = compiled(parallel.wrap(model), fast)  # DDP on several ranks; `model` itself on one
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, exp.optimizer, fast)
    steps_per_epoch = train_data.num_batches(exp.batch_size)
    schedule = build_scheduler(optimizer, exp.scheduler, exp.epochs, steps_per_epoch)
    mixup = MixUp(exp.mixup_alpha, exp.seed) if exp.mixup_alpha > 0 else None

    step, history = 0, []
    best_epoch, best_accuracy, best_state = None, -1.0, None
    window = _Window(device)
    saved = resume.load() if resume is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if schedule.scheduler is not None:
            schedule.scheduler.load_state_dict(saved["scheduler"])
        gen.set_state(saved["gen"])  # a generator's state is a CPU tensor on every device
        own = saved["ranks"][parallel.rank]  # this rank's streams and loss window
        own_gen.set_state(own["gen"])
        torch.set_rng_state(own["torch_rng"])
        if mixup is not None:
            mixup.rng.bit_generator.state = saved["mixup_rng"]
        window.total.copy_(own["window_total"])
        window.count = saved["window_count"]
        step, history = saved["step"], saved["history"]
        best_epoch, best_accuracy, best_state = (saved["best_epoch"], saved["best_accuracy"],
                                                 saved["best_state"])
        logger.replay(saved["log"])
        if progress:
            tqdm.write(f"{name}: resuming after epoch {len(history)} from {resume.path}")
    for epoch in range(len(history) + 1, exp.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        epoch_loss = torch.zeros((), device=device)
        epoch_correct = torch.zeros((), device=device)
        bar = tqdm(total=steps_per_epoch, desc=f"{name} {epoch}/{exp.epochs}", unit="step",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for images, labels in train_data.batches(exp.batch_size, gen):
            images, labels = parallel.shard(images), parallel.shard(labels)
            x = as_input(model_input(images, exp, own_gen), fast)
            with autocast(fast):  # bf16 on CUDA by default; the losses run in float32
                if mixup is not None:
                    lam, perm = mixup.draw(len(labels), own_gen, device)
                    logits = net(mix(x, lam, perm))
                    loss = mixed_cross_entropy(logits, labels, lam, perm, exp.label_smoothing)
                    correct = mixed_correct(logits.detach(), labels, lam, perm)
                else:
                    logits = net(x)
                    loss = F.cross_entropy(logits, labels, label_smoothing=exp.label_smoothing)
                    correct = (logits.detach().argmax(1) == labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if exp.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, exp.grad_clip_norm)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step applies
            optimizer.step()
            schedule.after_batch()

            step += 1
            batch_loss = loss.detach()
            window.add(batch_loss)
            epoch_loss += batch_loss * len(labels)
            epoch_correct += correct
            bar.update()
            if step % exp.log_every == 0:
                mean_loss = _read_loss(parallel.mean(window.take()), step)
                if logger:
                    logger.log_step(step, mean_loss, lr)
                    if exp.log_grad_norms:
                        logger.log_grad_norms(step, layer_grad_norms(model))
                seen = bar.n * exp.batch_size
                bar.set_postfix(loss=f"{mean_loss:.4f}",
                                img_s=f"{seen / (time.perf_counter() - epoch_start):.0f}")
        schedule.after_epoch()
        bar.close()
        seconds = time.perf_counter() - epoch_start
        epoch_loss, epoch_correct = parallel.sum(epoch_loss), parallel.sum(epoch_correct)
        row = {
            "epoch": epoch,
            "train_loss": _read_loss(epoch_loss / len(train_data), step),
            "train_accuracy": epoch_correct.item() / len(train_data),
            "epoch_seconds": seconds,
            "images_per_second": len(train_data) / seconds,
        }
        # Every rank scores (rank 0's numbers are the ones kept): the others would only wait.
        for split, split_data in scored.items():
            scores = predict(model, split_data, exp)
            row.update({f"{split}_loss": scores.loss, f"{split}_accuracy": scores.accuracy})
        if exp.keep_best and row[f"{exp.eval_split}_accuracy"] > best_accuracy:
            best_epoch, best_accuracy = epoch, row[f"{exp.eval_split}_accuracy"]
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in
                          model.state_dict().items()}
        history.append(row)
        if logger:  # timings go to the run summary, not to plots
            logger.log_epoch(epoch, step, {k: v for k, v in row.items()
                                           if k.endswith(("_loss", "_accuracy"))})
        if progress:
            tqdm.write(_epoch_line(name, exp.epochs, row))
        if resume is not None and epoch < exp.epochs:
            ranks = parallel.gather({"gen": own_gen.get_state(), "torch_rng": torch.get_rng_state(),
                                     "window_total": window.total.cpu()})  # on every rank
            if parallel.is_main:
                resume.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": schedule.scheduler.state_dict() if schedule.scheduler else None,
                    "gen": gen.get_state(), "ranks": ranks,
                    "mixup_rng": mixup.rng.bit_generator.state if mixup is not None else None,
                    "window_count": window.count,
                    "step": step, "history": history, "best_epoch": best_epoch,
                    "best_accuracy": best_accuracy, "best_state": best_state,
                    "log": logger.records,
                })
    train_seconds = sum(row["epoch_seconds"] for row in history)  # per-epoch scoring excluded
    return TrainResult(model.eval(), train_seconds, exp.epochs, len(train_data), step,
                       len(train_data) * exp.epochs / train_seconds, history, best_epoch,
                       best_state, fast.describe())


class _Recorder:
    """Passes log calls on to the real logger (if any) and keeps them, in order."""

    def __init__(self, logger: TrainLogger | None):
        self.logger = logger
        self.records: list[list] = []

    def __bool__(self) -> bool:
        return self.logger is not None

    def replay(self, records: list[list]) -> None:
        for method, *args in records:
            getattr(self, method)(*args)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self._call("log_step", step, loss, lr)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self._call("log_epoch", epoch, step, metrics)

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None:
        self._call("log_grad_norms", step, norms)

    def _call(self, method: str, *args) -> None:
        self.records.append([method, *args])
        if self.logger is not None:
            getattr(self.logger, method)(*args)


class _Window:
    """The mean training loss since the last log point, summed on the device."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.count += 1

    def take(self) -> torch.Tensor:
        mean = self.total / self.count
        self.total = torch.zeros_like(self.total)
        self.count = 0
        return mean


def _epoch_line(name: str, epochs: int, row: dict[str, float]) -> str:
    scores = "  ".join(f"{k.removesuffix('_accuracy')} acc {v:.4f}" for k, v in row.items()
                       if k.endswith("_accuracy"))
    return (f"{name} epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}  {scores}  "
            f"{row['epoch_seconds']:.1f}s  {row['images_per_second']:.0f} img/s")



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
