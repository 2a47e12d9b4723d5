"""What each DVC stage does, as functions of validated params. stages/*.py only parse argv."""

from __future__ import annotations

import csv
import json

import torch

from cnnlab import paths
from cnnlab.atomic import atomic_dir, atomic_path, write_text
from cnnlab.config import Params
from cnnlab.data.cifar10 import prepare_cifar10
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import load_prepared
from cnnlab.devices import describe_device, resolve_device
from cnnlab.download import download
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import predict, predictions_table
from cnnlab.figures import confusion_figure, loss_figure
from cnnlab.metrics import classification_metrics
from cnnlab.models import build_model, count_params
from cnnlab.runinfo import run_info
from cnnlab.tracking import training_log
from cnnlab.training import train


def download_cifar10(params: Params) -> None:
    source = params.data.cifar10
    download(source.url, paths.raw_archive("cifar10"), source.md5, desc="cifar10")


def prepare_cifar10_stage(params: Params) -> None:
    archive = paths.raw_archive("cifar10")
    if not archive.is_file():
        raise CnnlabError(f"{archive} not found (run `dvc repro download_cifar10` first)")
    dataset = prepare_cifar10(archive, paths.prepared_dir("cifar10"))
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    print(f"prepared cifar10: {sizes} images, {len(dataset.classes)} classes")


def train_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    device = resolve_device(exp.device)
    dataset = load_prepared(paths.prepared_dir(exp.dataset))
    with training_log(paths.train_log_dir(name)) as (logger, summary):
        result = train(exp, dataset, device, logger, name=name)
        with atomic_path(paths.model_checkpoint(name)) as tmp:
            torch.save(result.model.state_dict(), tmp)
        summary.update(result.history[-1])
        summary.update(
            train_seconds=result.train_seconds,
            epochs=result.epochs,
            steps=result.steps,
            train_images=result.train_images,
            images_per_second=result.images_per_second,
            seconds_per_epoch=result.train_seconds / result.epochs,
            device=describe_device(device),
        )
    print(f"{name}: trained {result.epochs} epochs in {result.train_seconds:.1f}s "
          f"({result.images_per_second:.0f} img/s) on {describe_device(device)}")


def evaluate_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    device = resolve_device(exp.device)
    dataset = load_prepared(paths.prepared_dir(exp.dataset))
    checkpoint = paths.model_checkpoint(name)
    train_summary_file = paths.train_log_dir(name) / "metrics.json"
    if not checkpoint.is_file() or not train_summary_file.is_file():
        raise CnnlabError(f"no trained model for {name!r} at {checkpoint} "
                          f"(run `dvc repro train@{name}` first)")
    model = build_model(exp.model, len(dataset.classes))
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.to(device)
    split = dataset.split(exp.eval_split)
    probs = predict(model, DeviceSplit(split, device), exp.normalize)
    predicted = probs.argmax(1)
    train_summary = json.loads(train_summary_file.read_text(encoding="utf-8"))

    record = classification_metrics(split.labels, predicted, dataset.classes)
    record.update(
        params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        train_seconds=train_summary["train_seconds"],
        seconds_per_epoch=train_summary["seconds_per_epoch"],
        epochs=train_summary["epochs"],
        train_images=train_summary["train_images"],
        dataset=exp.dataset,
        split=exp.eval_split,
        eval_images=len(split),
        model=exp.model,
        seed=exp.seed,
        **run_info(describe_device(device)),
    )
    _write_eval_outputs(name, exp.log_every, dataset.classes, split.labels, probs)
    write_text(paths.metrics_file(name), json.dumps(record, indent=2) + "\n")
    print(f"{name}: {exp.eval_split} accuracy {record['accuracy']:.4f}, "
          f"macro F1 {record['f1_macro']:.4f} on {len(split)} images")


def _write_eval_outputs(name, log_every, classes, labels, probs) -> None:
    from sklearn.metrics import confusion_matrix

    rows = predictions_table(probs, labels, classes)
    matrix = confusion_matrix(labels, probs.argmax(1), labels=range(len(classes)))
    loss_tsv = paths.train_log_dir(name) / "plots" / "metrics" / "loss.tsv"
    with atomic_dir(paths.eval_dir(name)) as out:
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        confusion_figure(matrix, classes, out / "confusion_matrix.png", f"{name}: confusion matrix")
        steps, losses = _read_series(loss_tsv, "loss") if loss_tsv.is_file() else ([], [])
        loss_figure(steps, losses, out / "loss.png", f"{name}: training loss", log_every)


def _read_series(tsv, column):
    with open(tsv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]
