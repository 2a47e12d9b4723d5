"""Typed, frozen views of params.yaml, validated when they are loaded.

Stages call `load_params()` and then read attributes; there are no `params["x"]` lookups elsewhere.
Names that come from a registry (models, optimizers, datasets) are checked against it, so an
unknown name fails at load with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from cnnlab import schema
from cnnlab.schema import ParamsError

PARAMS_FILE = "params.yaml"


def _model_names() -> list[str]:
    from cnnlab.models import MODELS  # lazy: the download stage should not pay for torch

    return sorted(MODELS)


def _optimizer_names() -> list[str]:
    from cnnlab.optim import OPTIMIZERS

    return sorted(OPTIMIZERS)


def _dataset_names() -> list[str]:
    return [f.name for f in dataclasses.fields(DataConfig)]


@dataclass(frozen=True)
class DownloadSource:
    """Where an archive comes from: an http(s) or file:// URL, or a local path."""

    url: str
    # null skips the check (only sensible for a local archive you trust)
    md5: str | None = field(metadata={"pattern": r"[0-9a-f]{32}"})


@dataclass(frozen=True)
class Coco5Config:
    """The COCO 5-class 64x64 dataset of study 002, selected with pycocotools (EXPERIMENTS.md)."""

    annotations: DownloadSource  # annotations_trainval2017.zip (or a local copy)
    classes: tuple[str, ...]  # COCO category names, in label order
    train_per_class: int = field(metadata={"min": 1})
    val_per_class: int = field(metadata={"min": 1})
    source_split: Literal["train2017", "val2017"] = "train2017"
    image_size: int = field(default=64, metadata={"min": 8})
    seed: int = field(default=0, metadata={"min": 0})
    # Keep only images holding exactly one of the classes: the study's own fix for label noise.
    exclusive: bool = False
    # When a class has too few images: false fails naming it; true takes what there is.
    allow_shortfall: bool = False
    # null: fetch each record's coco_url. An http(s)/file URL replaces the coco_url's
    # "http://images.cocodataset.org/" base; a local folder must hold <source_split>/<file_name>.
    image_source: str | None = None
    workers: int = field(default=16, metadata={"min": 1})  # concurrent fetches
    retries: int = field(default=4, metadata={"min": 0})  # per image, with backoff

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ParamsError(f"classes must be at least two distinct names, got "
                              f"{list(self.classes)}")


@dataclass(frozen=True)
class DataConfig:
    cifar10: DownloadSource
    coco5: Coco5Config


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = field(metadata={"choices": _optimizer_names})
    lr: float = field(metadata={"gt": 0})
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = field(default=1e-8, metadata={"gt": 0})  # adam, adamw, rmsprop
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    momentum: float = field(default=0.0, metadata={"min": 0})  # sgd, rmsprop
    nesterov: bool = False  # sgd
    alpha: float = field(default=0.99, metadata={"gt": 0})  # rmsprop smoothing (Keras' rho)


@dataclass(frozen=True)
class Normalize:
    """Per-channel mean and std applied after scaling pixels to [0, 1]."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if min(self.std) <= 0:
            raise ParamsError(f"std must be > 0, got {list(self.std)}")


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation, applied to whole batches on the training device."""

    hflip: bool = False  # flip each image left-right with p=0.5
    crop_padding: int = field(default=0, metadata={"min": 0})  # random crop after zero padding


@dataclass(frozen=True)
class Experiment:
    model: str = field(metadata={"choices": _model_names})
    dataset: str = field(metadata={"choices": _dataset_names})
    epochs: int = field(metadata={"min": 1})
    batch_size: int = field(metadata={"min": 1})
    seed: int = field(metadata={"min": 0})
    optimizer: OptimizerConfig
    normalize: Normalize = Normalize()
    augment: Augment = Augment()
    label_smoothing: float = field(default=0.0, metadata={"min": 0, "max": 1})
    train_subset: int | None = field(default=None, metadata={"min": 1})  # seeded, images
    eval_split: str = "test"
    eval_train: bool = False  # also score the training split (the study-002 table shows both)
    eval_each_epoch: bool = False  # score eval_split after every epoch, for the per-epoch curves
    log_grad_norms: bool = False  # per-layer gradient norms at every loss record
    log_every: int = field(default=100, metadata={"min": 1})  # steps between loss records
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


@dataclass(frozen=True)
class Profile:
    """Caps applied to every experiment, for quick smoke runs; null keeps the published recipe."""

    max_epochs: int | None = field(default=None, metadata={"min": 1})
    max_train_images: int | None = field(default=None, metadata={"min": 1})


@dataclass(frozen=True)
class Params:
    data: DataConfig
    experiments: dict[str, Experiment]
    profile: Profile = Profile()

    def __post_init__(self) -> None:
        for name in self.experiments:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ParamsError(f"experiments.{name}: experiment names may use only a-z, 0-9 "
                                  f"and _ (they become file names)")
            if name == "report":
                raise ParamsError("experiments.report: the name 'report' is reserved (the "
                                  "report stage writes metrics/report/, the folder this "
                                  "experiment's outputs would use); choose another name")

    def experiment(self, name: str) -> Experiment:
        """The named experiment with the profile's caps applied."""
        if name not in self.experiments:
            raise ParamsError(f"unknown experiment {name!r} (choose from: "
                              f"{', '.join(self.experiments)})")
        exp = self.experiments[name]
        caps = {}
        if self.profile.max_epochs is not None:
            caps["epochs"] = min(exp.epochs, self.profile.max_epochs)
        if self.profile.max_train_images is not None:
            caps["train_subset"] = min(exp.train_subset or self.profile.max_train_images,
                                       self.profile.max_train_images)
        return dataclasses.replace(exp, **caps)


def parse_params(data: object) -> Params:
    """Validate already-parsed YAML data."""
    return schema.build(Params, data, "")


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found (run from the project root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    return parse_params(data)
