"""Which precision and memory layout pay on this device, per experiment: the evidence behind the
`speed:` defaults (cnnlab.fastpath). Run from the project root:

    .venv/bin/python benchmarks/precision_layout.py cnn_aug deepcnn dropcnn_adam hw4net1 ann

For each experiment it times training steps (forward, loss, backward, optimizer step) of its model,
batch size, input size and optimizer on random input, through the fast path's own helpers, in four
settings: float32 NCHW (the studies' loop), channels_last, bf16 autocast, and both. The settings
take turns over --rounds rounds and each keeps its best round, so a burst of load on a shared
machine hurts all four alike. It prints img/s and the ratio to float32 NCHW, and marks the setting
`auto` resolves to here. Augmentation is left out: benchmarks/train_speed.py times the whole loop.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from cnnlab.config import Experiment, Speed, load_params
from cnnlab.data import cifar10
from cnnlab.devices import describe_device, resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.fastpath import FastPath, as_input, autocast, prepare_model, resolve_fastpath
from cnnlab.models import build_model
from cnnlab.train.optimizers import build_optimizer

SETTINGS = {"fp32": Speed(precision="fp32", channels_last=False),
            "fp32 channels_last": Speed(precision="fp32", channels_last=True),
            "bf16": Speed(precision="bf16", channels_last=False),
            "bf16 channels_last": Speed(precision="bf16", channels_last=True)}


def step_rate(exp: Experiment, classes: int, side: int, fast: FastPath, device: torch.device,
              seconds: float) -> float:
    """Training images/s of `exp`'s model under `fast`: steps for at least `seconds` (and at
    least 3) after 2 warm-up steps, on one fixed random batch."""
    torch.manual_seed(0)
    model = prepare_model(build_model(exp.model, classes, weights="none").to(device), fast)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, exp.optimizer, fast)
    x = as_input(torch.randn(exp.batch_size, 3, side, side, device=device), fast)
    y = torch.randint(0, classes, (exp.batch_size,), device=device)

    def step() -> None:
        with autocast(fast):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * exp.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="per setting and round")
    args = parser.parse_args()
    params = load_params()
    device = resolve_device(args.device)
    auto = resolve_fastpath(Speed(), device)
    print(f"### Training steps per second by precision and layout on {describe_device(device)}"
          f"\n\n`auto` here: {auto.describe()} (*)\n")
    print("| experiment (model, batch) | " + " | ".join(SETTINGS) + " |")
    print("|---" * (len(SETTINGS) + 1) + "|")
    for name in args.experiments:
        exp = params.experiment(name)
        coco5 = params.data.coco5
        classes, stored_side = ((len(coco5.classes), coco5.image_size) if exp.dataset == "coco5"
                                else (len(cifar10.CLASSES), 32))
        side = exp.input_side(stored_side)
        fast = {label: resolve_fastpath(speed, device) for label, speed in SETTINGS.items()}
        best = dict.fromkeys(SETTINGS, 0.0)
        for _ in range(args.rounds):
            for label in SETTINGS:
                best[label] = max(best[label], step_rate(exp, classes, side, fast[label],
                                                         device, args.seconds))
        base = best["fp32"]
        cells = [f"{rate:,.0f} img/s ({rate / base:.2f}x)"
                 + (" *" if (fast[label].autocast, fast[label].channels_last)
                    == (auto.autocast, auto.channels_last) else "")
                 for label, rate in best.items()]
        print(f"| {name} ({exp.model}, {exp.batch_size}) | " + " | ".join(cells) + " |",
              flush=True)


if __name__ == "__main__":
    try:
        main()
    except CnnlabError as exc:
        sys.exit(f"error: {exc}")
