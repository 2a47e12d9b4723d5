"""What each DVC stage does, as functions of validated params. stages/*.py only parse argv."""

from __future__ import annotations

import csv
import dataclasses
import json

import torch

from cnnlab import paths
from cnnlab.atomic import atomic_dir, write_text
from cnnlab.checkpoints import load_model
from cnnlab.compare import comparison_rows, grad_norm_means, read_series, to_csv, to_markdown
from cnnlab.config import Experiment, Params
from cnnlab.data.cifar10 import prepare_cifar10
from cnnlab.data.coco_annotations import extract_member
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import load_prepared
from cnnlab.data.selection import select_data
from cnnlab.devices import describe_device, resolve_device
from cnnlab.distributed import torchrun_group
from cnnlab.download import download
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import predict, predictions_table
from cnnlab.figures import grad_norms_figure, loss_curves_figure
from cnnlab.metrics import classification_metrics, classification_report_rows
from cnnlab.models import count_params
from cnnlab.resume import ResumeFile, fingerprint
from cnnlab.runinfo import run_info
from cnnlab.tracking import training_log
from cnnlab.training import train


def download_cifar10(params: Params) -> None:
    source = params.data.cifar10
    download(source.url, paths.raw_archive("cifar10"), source.md5, desc="cifar10")


def download_coco(params: Params) -> None:
    cfg = params.data.coco5
    archive = paths.raw_archive("coco_annotations")
    download(cfg.annotations.url, archive, cfg.annotations.md5, desc="coco annotations")
    extract_member(archive, f"annotations/instances_{cfg.source_split}.json",
                   paths.coco_instances())


def build_coco5_stage(params: Params) -> None:
    from cnnlab.data.coco_build import build_coco5  # only this stage needs pycocotools

    instances = paths.coco_instances()
    if not instances.is_file():
        raise CnnlabError(f"{instances} not found (run `dvc repro download_coco` first)")
    dataset = build_coco5(params.data.coco5, instances, paths.prepared_dir("coco5"),
                          paths.coco_browse_dir(), paths.coco_image_cache())
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    print(f"built coco5: {sizes} images, classes {', '.join(dataset.classes)}")


def prepare_cifar10_stage(params: Params) -> None:
    archive = paths.raw_archive("cifar10")
    if not archive.is_file():
        raise CnnlabError(f"{archive} not found (run `dvc repro download_cifar10` first)")
    dataset = prepare_cifar10(archive, paths.prepared_dir("cifar10"))
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    print(f"prepared cifar10: {sizes} images, {len(dataset.classes)} classes")


def train_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    # Under torchrun each rank trains its shard of every batch; rank 0 alone writes the outputs.
    with torchrun_group(resolve_device(exp.device)) as (parallel, device):
        dataset = load_prepared(paths.prepared_dir(exp.dataset))
        resume = ResumeFile(paths.resume_checkpoint(name),
                            fingerprint(exp, dataset.name, len(dataset.split("train")),
                                        parallel.world_size))
        if not parallel.is_main:
            train(exp, dataset, device, progress=False, name=name, resume=resume,
                  parallel=parallel)
            return
        with training_log(paths.train_log_dir(name)) as (logger, summary):
            result = train(exp, dataset, device, logger, name=name, resume=resume,
                           parallel=parallel)
            with atomic_dir(paths.model_dir(name)) as out:
                torch.save(result.model.state_dict(), out / paths.model_checkpoint(name).name)
                if result.best_state is not None:
                    torch.save(result.best_state, out / paths.best_checkpoint(name).name)
            summary.update(result.history[-1])
            if result.best_epoch is not None:
                best = result.history[result.best_epoch - 1]
                summary.update(best_epoch=result.best_epoch,
                               **{f"best_{k}": v for k, v in best.items()
                                  if k.endswith("_accuracy")})
            summary.update(
                train_seconds=result.train_seconds,
                epochs=result.epochs,
                steps=result.steps,
                train_images=result.train_images,
                images_per_second=result.images_per_second,
                seconds_per_epoch=result.train_seconds / result.epochs,
                device=parallel.describe(device),
                speed=result.speed,
            )
        resume.clear()  # every output is in place: nothing left to resume
    print(f"{name}: trained {result.epochs} epochs in {result.train_seconds:.1f}s "
          f"({result.images_per_second:.0f} img/s) on {parallel.describe(device)}")


def evaluate_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    device = resolve_device(exp.device)
    data = select_data(exp, load_prepared(paths.prepared_dir(exp.dataset)))
    checkpoint = paths.model_checkpoint(name)
    train_summary_file = paths.train_summary(name)
    if not checkpoint.is_file() or not train_summary_file.is_file():
        raise CnnlabError(f"no trained model for {name!r} at {checkpoint} "
                          f"(run `dvc repro train@{name}` first)")
    train_summary = json.loads(train_summary_file.read_text(encoding="utf-8"))
    model = load_model(exp, name, len(data.classes), checkpoint, device)
    split = data.split(exp.eval_split)
    probs = predict(model, DeviceSplit(split, device), exp)

    record = classification_metrics(split.labels, probs.argmax(1), data.classes)
    record.update(_accuracies(model, data, exp, device))
    best_file = paths.best_checkpoint(name)
    if exp.keep_best and best_file.is_file():
        best_model = load_model(exp, name, len(data.classes), best_file, device)
        best_probs = predict(best_model, DeviceSplit(split, device), exp)
        best = classification_metrics(split.labels, best_probs.argmax(1), data.classes)
        record["best"] = {"epoch": train_summary["best_epoch"], "accuracy": best["accuracy"],
                          "f1_macro": best["f1_macro"],
                          **_accuracies(best_model, data, exp, device)}
    record.update(
        params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        # No timings: with the same params this file is bit-identical from run to run on the
        # CPU. Wall times live in the train summary (paths.train_summary), which the report reads.
        epochs=train_summary["epochs"],
        train_images=train_summary["train_images"],
        dataset=exp.dataset,
        split=exp.eval_split,
        eval_images=len(split),
        model=exp.model,
        seed=exp.seed,
        optimizer=dataclasses.asdict(exp.optimizer),  # with the preset's defaults filled in
        **run_info(describe_device(device)),
    )
    _write_eval_outputs(name, data.classes, split.labels, probs)
    write_text(paths.metrics_file(name), json.dumps(record, indent=2) + "\n")
    extra = "".join(f", {s} accuracy {record[f'{s}_accuracy']:.4f}" for s in exp.also_evaluate)
    print(f"{name}: {exp.eval_split} accuracy {record['accuracy']:.4f}, "
          f"macro F1 {record['f1_macro']:.4f} on {len(split)} images{extra}")


def _accuracies(model, data, exp: Experiment, device) -> dict[str, float]:
    """Accuracy on each also_evaluate split, e.g. train (study 002) or val (study 004)."""
    out = {}
    for split_name in exp.also_evaluate:
        split = data.split(split_name)
        probs = predict(model, DeviceSplit(split, device), exp)
        out[f"{split_name}_accuracy"] = float((probs.argmax(1) == split.labels).mean())
    return out


def _write_eval_outputs(name, classes, labels, probs) -> None:
    """Predictions and the classification report; the figures stage draws from these."""
    rows = predictions_table(probs, labels, classes)
    report = classification_report_rows(labels, probs.argmax(1), classes)
    with atomic_dir(paths.eval_dir(name)) as out:
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "classification_report.csv").write_text(to_csv(report), encoding="utf-8")
        (out / "classification_report.md").write_text(to_markdown(_rounded(report)),
                                                      encoding="utf-8")


def _rounded(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def compare_experiments(params: Params, name: str, experiments: list[str]) -> None:
    """Tables (Markdown, CSV) and overlay figures for a group of finished experiments."""
    for exp in experiments:
        params.experiment(exp)  # an unknown name fails here, listing the known ones
        if not paths.metrics_file(exp).is_file():
            raise CnnlabError(f"{paths.metrics_file(exp)} not found "
                              f"(run `dvc repro evaluate@{exp}` first)")
    rows = comparison_rows(experiments)
    every = params.experiment(experiments[0]).log_every
    with atomic_dir(paths.comparison_dir(name)) as out:
        (out / "table.md").write_text(to_markdown(rows), encoding="utf-8")
        (out / "table.csv").write_text(to_csv(rows), encoding="utf-8")
        losses = {exp: read_series(paths.loss_series(exp), "loss") for exp in experiments}
        loss_curves_figure(losses, out / "loss_curves.png", f"{name}: training loss", every)
        norms = {exp: grad_norm_means(exp) for exp in experiments}
        if any(norms.values()):
            grad_norms_figure(norms, out / "grad_norms.png", f"{name}: gradient norm per layer")
    print(to_markdown(rows))
