"""The one training loop every experiment runs through.

`train()` takes a validated Experiment and a prepared dataset and returns the trained model and
its logs; it does no file I/O, so tests call it directly and the stage script stays thin. It reads
as the recipe: build the run, then for each epoch train it, score it, keep the best, record it and
save the state (cnnlab.train.resume.TrainState, everything a resumed run needs). Loss and accuracy
accumulate on the device and are read back only at logging points, so a GPU never waits on the
host inside the step loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnlab.config import Experiment
from cnnlab.data.augment import model_input
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import PreparedDataset
from cnnlab.data.selection import select_data
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
from cnnlab.models import build_model
from cnnlab.models.init import INITIALISERS
from cnnlab.out_of_memory import training_memory
from cnnlab.train.distributed import SINGLE, Parallel
from cnnlab.train.mixup import MixUp, mix, mixed_correct, mixed_cross_entropy
from cnnlab.train.optimizers import build_optimizer
from cnnlab.train.resume import (
    GlobalRng,
    LogRecorder,
    LossWindow,
    ResumeFile,
    TrainLogger,
    TrainState,
    restore_state,
    save_state,
)
from cnnlab.train.schedulers import build_scheduler


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


@dataclass
class Run:
    """The parts of a run fixed from start to end (what changes lives in TrainState)."""

    exp: Experiment
    fast: FastPath
    parallel: Parallel
    name: str
    progress: bool
    train_data: DeviceSplit
    scored: dict[str, DeviceSplit]  # splits scored after every epoch
    net: nn.Module  # what a step calls: the model, compiled and/or wrapped in DDP
    trainable: list[nn.Parameter]


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
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train `exp` on its selection of `dataset` (cnnlab.data.selection). Per-epoch scoring
    runs outside the timed training, so seconds per epoch stay comparable. With `resume`, the
    state after each epoch is saved there, and a saved state of the same run is continued.
    Under torchrun, `parallel` is this rank (cnnlab.train.distributed): it trains its shard of
    every batch, the logged loss and accuracy are the ranks' together, and only rank 0 saves.
    `init_state` (exp.init_from) replaces the initialiser's weights: training continues from
    another experiment's model with a fresh optimizer and schedule."""
    fast = resolve_fastpath(exp.speed, device)
    with backends(fast):  # cuDNN autotuning, determinism: this run's, restored after it
        run, state = _build(exp, dataset, device, logger, name, progress, parallel, fast,
                            init_state)
        if resume is not None and restore_state(resume, state, parallel) and progress:
            tqdm.write(f"{name}: resuming after epoch {len(state.history)} from {resume.path}")
        for epoch in range(len(state.history) + 1, exp.epochs + 1):
            row = _train_epoch(run, state, epoch)
            row.update(_score(run, state.model))
            _keep_best(exp, state, row)
            _record(run, state, row)
            if resume is not None and epoch < exp.epochs:
                save_state(resume, state, parallel)
        return _result(run, state)


def _build(exp: Experiment, dataset: PreparedDataset, device: torch.device,
           logger: TrainLogger | None, name: str, progress: bool, parallel: Parallel,
           fast: FastPath, init_state: dict[str, torch.Tensor] | None
           ) -> tuple[Run, TrainState]:
    """The run and its initial state. The order of the seeded draws is part of the recipe: a
    change here changes every trained model."""
    data = select_data(exp, dataset)
    torch.manual_seed(exp.seed)  # model initialisation
    gen = torch.Generator(device=device).manual_seed(exp.seed)  # shuffling and augmentation
    train_data = DeviceSplit(data.split("train"), device)
    parallel.check_batches(len(train_data), exp.batch_size)
    scored = {split: DeviceSplit(data.split(split), device) for split in epoch_splits(exp)}
    model = build_model(exp.model, len(data.classes), weights=exp.weights)
    model = INITIALISERS[exp.init](model)
    if init_state is not None:  # after the initialiser, so the seeded draws stay the same
        model.load_state_dict(init_state)
    model = model.to(device)
    prepare_model(model, fast)
    own_gen = parallel.own_generator(gen, exp.seed)  # `gen` itself on one process
    net = compiled(parallel.wrap(model), fast)  # DDP on several ranks; `model` itself on one
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, exp.optimizer, fast)
    schedule = build_scheduler(optimizer, exp.scheduler, exp.epochs,
                               train_data.num_batches(exp.batch_size))
    mixup = MixUp(exp.mixup_alpha, exp.seed) if exp.mixup_alpha > 0 else None
    run = Run(exp, fast, parallel, name, progress, train_data, scored, net, trainable)
    state = TrainState(model, optimizer, schedule, gen, own_gen, GlobalRng(device), mixup,
                       LossWindow(device), LogRecorder(logger))
    return run, state


def _train_epoch(run: Run, state: TrainState, epoch: int) -> dict[str, float]:
    """One pass over the training split; its loss, accuracy and speed."""
    exp, parallel = run.exp, run.parallel
    state.model.train()
    start = time.perf_counter()
    device = state.window.total.device
    loss_sum, correct_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    bar = tqdm(total=run.train_data.num_batches(exp.batch_size), unit="step", leave=False,
               desc=f"{run.name} {epoch}/{exp.epochs}", disable=not run.progress,
               dynamic_ncols=True)
    for images, labels in run.train_data.batches(exp.batch_size, state.gen):
        images, labels = parallel.shard(images), parallel.shard(labels)
        loss, correct, lr = _step(run, state, images, labels)
        state.step += 1
        state.window.add(loss)
        loss_sum += loss * len(labels)
        correct_sum += correct
        bar.update()
        if state.step % exp.log_every == 0:
            mean_loss = _log_window(run, state, lr)
            seen = bar.n * exp.batch_size
            bar.set_postfix(loss=f"{mean_loss:.4f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
    state.schedule.after_epoch()
    bar.close()
    seconds = time.perf_counter() - start
    images = len(run.train_data)
    return {"epoch": epoch,
            "train_loss": _read_loss(parallel.sum(loss_sum) / images, state.step),
            "train_accuracy": parallel.sum(correct_sum).item() / images,
            "epoch_seconds": seconds, "images_per_second": images / seconds}


def _step(run: Run, state: TrainState, images: torch.Tensor, labels: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimizer step on a batch: its loss, its count of correct predictions (MixUp-
    weighted), and the learning rate it applied."""
    exp = run.exp
    x = as_input(model_input(images, exp, state.own_gen), run.fast)
    with autocast(run.fast):  # bf16 on CUDA by default; the losses run in float32
        if state.mixup is not None:
            lam, perm = state.mixup.draw(len(labels), state.own_gen, labels.device)
            logits = run.net(mix(x, lam, perm))
            loss = mixed_cross_entropy(logits, labels, lam, perm, exp.label_smoothing)
            correct = mixed_correct(logits.detach(), labels, lam, perm)
        else:
            logits = run.net(x)
            loss = F.cross_entropy(logits, labels, label_smoothing=exp.label_smoothing)
            correct = (logits.detach().argmax(1) == labels).sum()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if exp.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(run.trainable, exp.grad_clip_norm)
    lr = state.optimizer.param_groups[0]["lr"]  # the rate this step applies
    state.optimizer.step()
    state.schedule.after_batch()
    return loss.detach(), correct, lr


def _log_window(run: Run, state: TrainState, lr: float) -> float:
    """Log the mean loss since the last log point (and the layers' gradient norms)."""
    mean_loss = _read_loss(run.parallel.mean(state.window.take()), state.step)
    if state.log:
        state.log.log_step(state.step, mean_loss, lr)
        if run.exp.log_grad_norms:
            state.log.log_grad_norms(state.step, layer_grad_norms(state.model))
    return mean_loss


def _score(run: Run, model: nn.Module) -> dict[str, float]:
    """Loss and accuracy on each per-epoch split. Every rank scores (rank 0's numbers are the
    ones kept): the others would only wait."""
    row = {}
    for split, split_data in run.scored.items():
        scores = predict(model, split_data, run.exp)
        row.update({f"{split}_loss": scores.loss, f"{split}_accuracy": scores.accuracy})
    return row


def _keep_best(exp: Experiment, state: TrainState, row: dict[str, float]) -> None:
    """keep_best: remember this epoch's weights when it beats every earlier one on eval_split."""
    accuracy = row.get(f"{exp.eval_split}_accuracy")
    if exp.keep_best and accuracy > state.best_accuracy:
        state.best_epoch, state.best_accuracy = row["epoch"], accuracy
        state.best_state = {k: v.detach().to("cpu", copy=True)
                            for k, v in state.model.state_dict().items()}


def _record(run: Run, state: TrainState, row: dict[str, float]) -> None:
    state.history.append(row)
    if state.log:  # timings go to the run summary, not to plots
        state.log.log_epoch(row["epoch"], state.step, {
            k: v for k, v in row.items() if k.endswith(("_loss", "_accuracy"))})
    if run.progress:
        tqdm.write(_epoch_line(run.name, run.exp.epochs, row))


def _result(run: Run, state: TrainState) -> TrainResult:
    train_seconds = sum(row["epoch_seconds"] for row in state.history)  # scoring excluded
    images = len(run.train_data)
    return TrainResult(state.model.eval(), train_seconds, run.exp.epochs, images, state.step,
                       images * run.exp.epochs / train_seconds, state.history, state.best_epoch,
                       state.best_state, run.fast.describe())


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
