"""Time cnnlab's training loop against the studies' own (benchmarks/study_loop.py) in one run, on
the same data, device and recipe. Run from the project root, after `dvc repro prepare_cifar10`:

    .venv/bin/python benchmarks/train_speed.py cnn_aug deepcnn --train-images 2048 --json out.json

For each experiment and each loop, a fresh process (so peak memory is its own) measures:
- train img/s: the last of --epochs epochs over --train-images images (the first epoch warms up
  worker processes, caches and cuDNN), the experiment's full recipe (augmentation, MixUp, ...);
- augmentation img/s: one epoch of augmented, normalised batches with no model (second pass);
- eval img/s: scoring --eval-images images of the eval split (second pass);
- peak host RSS of the main process and of its largest DataLoader worker (the study loop's; cnnlab
  has none), and the peak GPU memory on CUDA;
- achieved training TFLOP/s (FLOPs per image from torch's FlopCounterMode, times train img/s) as
  a share of the device's measured dense matmul rate (bf16 on CUDA, float32 on the CPU).
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
from cnnlab.config import Experiment, Speed, load_params  # noqa: E402
from cnnlab.data.augment import model_input  # noqa: E402
from cnnlab.data.loader import DeviceSplit  # noqa: E402
from cnnlab.data.prepared import load_prepared  # noqa: E402
from cnnlab.data.selection import select_data  # noqa: E402
from cnnlab.devices import describe_device, resolve_device  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.evaluate.scoring import predict  # noqa: E402
from cnnlab.fastpath import resolve_fastpath  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.models.init import INITIALISERS  # noqa: E402
from cnnlab.train.loop import train  # noqa: E402
from cnnlab.train.optimizers import build_optimizer  # noqa: E402
from cnnlab.train.schedulers import build_scheduler  # noqa: E402

LOOPS = ("study", "cnnlab", "cnnlab_fp32")
LOOP_NAMES = {"study": "study-style loop", "cnnlab": "cnnlab",
              "cnnlab_fp32": "cnnlab, precision fp32"}
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
                               keep_best=False, also_evaluate=(), device=args.device,
                               seed=args.seed)


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
    return {"speed": result.speed,  # what the fast path turned on, as the train summary says
            "train_images_per_second": result.history[-1]["images_per_second"],
            "augment_images_per_second": len(train_split) / augment_seconds,
            "eval_images_per_second": len(eval_split) / eval_seconds,
            "eval_accuracy": probs.accuracy}


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
    eval_loader = batches(eval_data, study_loop.eval_transform(exp), False, exp.eval_batch_size())
    study_loop.evaluate(model, eval_loader, device)  # warm-up
    accuracy, scored, eval_seconds = study_loop.evaluate(model, eval_loader, device)
    return {"train_images_per_second": epoch.images / epoch.seconds,
            "augment_images_per_second": seen / augment_seconds,
            "eval_images_per_second": scored / eval_seconds,
            "eval_accuracy": accuracy, "speed": "fp32"}


def training_flops_per_image(exp: Experiment, num_classes: int, stored_side: int,
                             device: torch.device) -> float:
    """Forward + backward FLOPs of one training image, counted by torch's FlopCounterMode on one
    batch of the experiment's input size (convolutions and matmuls: what dominates)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(exp.model, num_classes, weights="none").to(device)
    side = exp.input_side(stored_side)
    x = torch.randn(8, 3, side, side, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    return counter.get_total_flops() / len(x)


def matmul_flops_per_second(device: torch.device) -> tuple[float, str]:
    """The device's measured dense matmul rate, the ceiling to compare a loop against, in the
    precision cnnlab's fast path trains in there (bf16 on CUDA and on CPUs with bf16 arithmetic)."""
    dtype = resolve_fastpath(Speed(), device).autocast or torch.float32
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b  # warm-up
    reps = 20 if device.type == "cuda" else 5
    seconds = _timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n**3 * reps / seconds, f"{str(dtype).removeprefix('torch.')} {n}x{n} matmul"


def child(loop: str, name: str, args) -> None:
    """One measurement in this process; prints one JSON line."""
    exp = benchmark_experiment(load_params().experiment(name), args)
    device = resolve_device(exp.device)
    if loop == "cnnlab_fp32":  # the same loop with only the precision changed
        exp = dataclasses.replace(exp, speed=dataclasses.replace(exp.speed, precision="fp32"))
    figures = (run_study if loop == "study" else run_cnnlab)(exp, device, args)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Only the study loop has worker processes. cnnlab's loop has none: its only child is the
    # `ldconfig -p` that importing torch forks, whose peak RSS is the parent's at the fork.
    figures["peak_child_rss_mb"] = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                                    if loop == "study" else None)
    figures["peak_gpu_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                              if device.type == "cuda" else None)
    figures["device"] = describe_device(device)
    print(json.dumps(figures))


def measure(loop: str, name: str, args) -> dict[str, float]:
    cmd = [sys.executable, __file__, name, "--child", loop, "--seed", str(args.seed),
           "--epochs", str(args.epochs),
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


def over_seeds(runs: list[dict]) -> dict:
    """One loop's runs over seeds: the mean of each figure, and the accuracy's sample std."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    merged = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    merged |= {k: v for k, v in runs[0].items() if k not in keys}  # device, None-valued ones
    accuracy = [r["eval_accuracy"] for r in runs]
    merged["eval_accuracy_std"] = float(np.std(accuracy, ddof=1)) if len(runs) > 1 else None
    merged["seeds"] = len(runs)
    return merged


def _accuracy(figures: dict) -> str:
    std = figures["eval_accuracy_std"]
    return f"{figures['eval_accuracy']:.2%}" + (f" ± {std:.2%}" if std is not None else "")


def add_flop_rates(results: dict[str, dict], flops_per_image: float, peak: float) -> None:
    """Achieved training TFLOP/s of each loop, and its share of the measured matmul rate."""
    for figures in results.values():
        achieved = flops_per_image * figures["train_images_per_second"]
        figures["train_tflops"] = achieved / 1e12
        figures["share_of_matmul_rate"] = achieved / peak


def table(name: str, results: dict[str, dict], flops_per_image: float, peak: float,
          peak_what: str) -> str:
    study, ours = results["study"], results["cnnlab"]
    loops = [r for r in LOOPS if r in results]
    heads = [f"{LOOP_NAMES[r]} ({results[r]['speed']})" for r in loops]
    lines = [f"### {name} on {ours['device']}", "",
             f"| measure | {' | '.join(heads)} | cnnlab / study |", "|---" * (len(loops) + 2) + "|"]
    for key, label in ROWS:
        a, b = study.get(key), ours.get(key)
        ratio = f"{b / a:.2f}x" if a and b and key != "eval_accuracy" else "—"
        cells = [_cell(key, results[r].get(key)) for r in loops]
        if key == "eval_accuracy":
            cells = [_accuracy(results[r]) for r in loops]
            label += f" (mean ± std over {ours['seeds']} seeds)" if ours["seeds"] > 1 else ""
        lines.append(f"| {label} | {' | '.join(cells)} | {ratio} |")
    tflops = " | ".join(f"{results[r]['train_tflops']:.3f}" for r in loops)
    shares = " | ".join(f"{results[r]['share_of_matmul_rate']:.1%}" for r in loops)
    lines += [f"| train TFLOP/s ({flops_per_image / 1e9:.3f} GFLOP per image, fwd+bwd) | "
              f"{tflops} | — |",
              f"| share of the measured {peak_what} rate ({peak / 1e12:.2f} TFLOP/s) | "
              f"{shares} | — |"]
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run of each loop per seed: speeds are averaged, accuracy is "
                             "shown as mean ± std")
    parser.add_argument("--fp32-reference", action="store_true",
                        help="also run cnnlab's loop in float32, to compare accuracy with only "
                             "the precision changed")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # a child's
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
    device = resolve_device(args.device)
    peak, peak_what = matmul_flops_per_second(device)
    report["machine"]["matmul"] = {"what": peak_what, "flops_per_second": peak}
    params = load_params()
    loops = [loop for loop in LOOPS if loop != "cnnlab_fp32" or args.fp32_reference]
    for name in args.experiments:
        exp = params.experiment(name)
        dataset = load_prepared(paths.prepared_dir(exp.dataset))
        stored_side = next(iter(dataset.splits.values())).images.shape[1]
        flops = training_flops_per_image(exp, len(dataset.classes), stored_side, device)
        runs = {loop: [measure(loop, name, argparse.Namespace(**{**vars(args), 'seed': seed}))
                       for seed in args.seeds] for loop in loops}
        results = {loop: over_seeds(figures) for loop, figures in runs.items()}
        add_flop_rates(results, flops, peak)
        report["results"][name] = {"flops_per_image": flops, "runs": runs, **results}
        print(table(name, results, flops, peak, peak_what), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except CnnlabError as exc:
        sys.exit(f"error: {exc}")
