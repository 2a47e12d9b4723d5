"""Time cnnlab's training loop against the studies' own (benchmarks/study_loop.py) in one run, on
the same data, device and recipe. Run from the project root, after `dvc repro prepare_cifar10`:

    .venv/bin/python benchmarks/train_speed.py cnn_aug deepcnn --train-images 2048 --json out.json

For each experiment and each loop, a fresh process (so peak memory is its own) measures:
- train img/s: the last of --epochs epochs over --train-images images (the first epoch warms up
  worker processes, caches and cuDNN), the experiment's full recipe (augmentation, MixUp, ...);
- augmentation img/s: one epoch of augmented, normalised batches with no model (second pass);
- eval img/s: scoring --eval-images images of the eval split (second pass);
- peak host RSS of the main process and of its largest child (DataLoader workers), and the peak
  GPU memory on CUDA.
It prints a table with the ratio cnnlab / study, and writes the same as JSON with --json. The
machine is shared and noisy: compare the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import study_loop  # noqa: E402

from cnnlab import paths  # noqa: E402
from cnnlab.augment import eval_batch_size, model_input  # noqa: E402
from cnnlab.config import Experiment, load_params  # noqa: E402
from cnnlab.data.loader import DeviceSplit  # noqa: E402
from cnnlab.data.prepared import load_prepared  # noqa: E402
from cnnlab.data.selection import select_data  # noqa: E402
from cnnlab.devices import describe_device, resolve_device  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.evaluation import predict  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.models.init import INITIALISERS  # noqa: E402
from cnnlab.optim import build_optimizer  # noqa: E402
from cnnlab.schedulers import build_scheduler  # noqa: E402
from cnnlab.training import train  # noqa: E402

LOOPS = ("study", "cnnlab")
ROWS = (("train_images_per_second", "train img/s"),
        ("augment_images_per_second", "augmentation img/s"),
        ("eval_images_per_second", "eval img/s"),
        ("peak_rss_mb", "peak host RSS, main (MB)"),
        ("peak_child_rss_mb", "peak host RSS, largest worker (MB)"),
        ("peak_gpu_mb", "peak GPU memory (MB)"),
        ("eval_accuracy", "accuracy after the timed epochs"))


def benchmark_experiment(exp: Experiment, args) -> Experiment:
    """The experiment's recipe on a seeded subset, for --epochs epochs, no per-epoch scoring."""
    return dataclasses.replace(exp, epochs=args.epochs, train_subset=args.train_images,
                               eval_subset=args.eval_images, eval_each_epoch=False,
                               keep_best=False, also_evaluate=(), device=args.device)


def _timed(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_cnnlab(exp: Experiment, device: torch.device, args) -> dict[str, float]:
    dataset = load_prepared(paths.prepared_dir(exp.dataset))
    data = select_data(exp, dataset)
    train_split = DeviceSplit(data.split("train"), device)
    gen = torch.Generator(device=device).manual_seed(exp.seed)

    def augment_epoch():
        for images, _ in train_split.batches(exp.batch_size, gen):
            model_input(images, exp, gen)

    augment_epoch()  # warm-up
    augment_seconds = _timed(augment_epoch, device)
    result = train(exp, dataset, device, progress=False)
    eval_split = DeviceSplit(data.split(exp.eval_split), device)
    predict(result.model, eval_split, exp)  # warm-up
    start = time.perf_counter()
    probs = predict(result.model, eval_split, exp)  # ends on the host: synchronised
    eval_seconds = time.perf_counter() - start
    return {"train_images_per_second": result.history[-1]["images_per_second"],
            "augment_images_per_second": len(train_split) / augment_seconds,
            "eval_images_per_second": len(eval_split) / eval_seconds,
            "eval_accuracy": float((probs.argmax(1) == eval_split.labels.cpu().numpy()).mean())}


def run_study(exp: Experiment, device: torch.device, args) -> dict[str, float]:
    data = select_data(exp, load_prepared(paths.prepared_dir(exp.dataset)))
    train_data, eval_data = data.split("train"), data.split(exp.eval_split)
    torch.manual_seed(exp.seed)
    np.random.seed(exp.seed)
    size = train_data.images.shape[1]
    augment = study_loop.train_transform(exp, size)
    workers = args.workers

    def batches(split, transform, shuffle, batch_size):
        return study_loop.loader(split, transform, batch_size, workers, shuffle, device, exp.seed)

    aug_loader = batches(train_data, augment, True, exp.batch_size)
    study_loop.augment_only(aug_loader)  # warm-up: starts the workers
    seen, augment_seconds = study_loop.augment_only(aug_loader)
    del aug_loader

    model = INITIALISERS[exp.init](build_model(exp.model, len(data.classes), weights=exp.weights))
    model = model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, exp.optimizer)
    train_loader = batches(train_data, augment, True, exp.batch_size)
    schedule = build_scheduler(optimizer, exp.scheduler, exp.epochs, len(train_loader))
    for _ in range(exp.epochs):
        epoch = study_loop.train_epoch(model, train_loader, optimizer, schedule, exp, device,
                                       trainable)
    del train_loader
    eval_loader = batches(eval_data, study_loop.eval_transform(exp), False, eval_batch_size(exp))
    study_loop.evaluate(model, eval_loader, device)  # warm-up
    accuracy, scored, eval_seconds = study_loop.evaluate(model, eval_loader, device)
    return {"train_images_per_second": epoch.images / epoch.seconds,
            "augment_images_per_second": seen / augment_seconds,
            "eval_images_per_second": scored / eval_seconds,
            "eval_accuracy": accuracy}


def child(loop: str, name: str, args) -> None:
    """One measurement in this process; prints one JSON line."""
    exp = benchmark_experiment(load_params().experiment(name), args)
    device = resolve_device(exp.device)
    figures = (run_study if loop == "study" else run_cnnlab)(exp, device, args)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["peak_child_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures["peak_gpu_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                              if device.type == "cuda" else None)
    figures["device"] = describe_device(device)
    print(json.dumps(figures))


def measure(loop: str, name: str, args) -> dict[str, float]:
    cmd = [sys.executable, __file__, name, "--child", loop, "--epochs", str(args.epochs),
           "--train-images", str(args.train_images), "--eval-images", str(args.eval_images),
           "--workers", str(args.workers), "--device", args.device]
    done = subprocess.run(cmd, cwd=Path.cwd(), capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CnnlabError(f"{loop} loop on {name} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cell(key: str, value) -> str:
    if value is None:
        return "—"
    if key == "eval_accuracy":
        return f"{value:.2%}"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(name: str, results: dict[str, dict]) -> str:
    study, ours = results["study"], results["cnnlab"]
    lines = [f"### {name} on {ours['device']}", "",
             "| measure | study-style loop | cnnlab | cnnlab / study |", "|---|---|---|---|"]
    for key, label in ROWS:
        a, b = study.get(key), ours.get(key)
        ratio = f"{b / a:.2f}x" if a and b and key != "eval_accuracy" else "—"
        lines.append(f"| {label} | {_cell(key, a)} | {_cell(key, b)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="timed: the last one")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader workers of the study-style loop (study 003: 4)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.experiments[0], args)
        return
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("json", "child")},
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
              "results": {}}
    for name in args.experiments:
        results = {loop: measure(loop, name, args) for loop in LOOPS}
        report["results"][name] = results
        print(table(name, results), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except CnnlabError as exc:
        sys.exit(f"error: {exc}")
