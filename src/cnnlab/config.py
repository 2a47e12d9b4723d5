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

from cnnlab import catalog, schema
from cnnlab.schema import ParamsError

PARAMS_FILE = "params.yaml"


def _model_names() -> list[str]:
    return sorted(catalog.MODELS)


def _optimizer_names() -> list[str]:
    return sorted(catalog.OPTIMIZERS)


def _dataset_names() -> list[str]:
    return [f.name for f in dataclasses.fields(DataConfig)]


@dataclass(frozen=True)
class DownloadSource:
    """Where an archive comes from: an http(s) or file:// URL, or a local path."""

    url: str
    # null skips the check (only sensible for a local archive you trust)
    md5: str | None = field(metadata={"pattern": r"[0-9a-f]{32}",
                                      "hint": "32 lowercase hex digits, as md5sum prints"})


@dataclass(frozen=True)
class Coco5Config:
    """The COCO 5-class 64x64 dataset of study 002, selected with pycocotools: whole
    images of five classes resized to 64x64, no image in both train and val."""

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
    # Downscaling filter. area (cv2.INTER_AREA) averages every source pixel under an output
    # pixel, the right filter for shrinking ~640 -> 64. linear (cv2.INTER_LINEAR) is what study
    # 002 got from cv2.resize's default: it samples 2x2 pixels per output pixel and aliases
    # (moire, jagged edges) at a 10x shrink, a flaw kept only to reproduce the study.
    interpolation: Literal["area", "linear"] = "area"
    # null keeps the resized pixels as they are (lossless arrays). 1..100: each resized image is
    # saved as an in-memory JPEG by PIL at this quality (PIL's default 4:2:0 chroma subsampling)
    # and decoded back, as study 002 did with 75 (PIL's default) by saving its dataset as .jpg
    # files and training on the re-read files: lossy re-encoding, a flaw kept only to reproduce.
    jpeg_quality: int | None = field(default=None, metadata={"min": 1, "max": 100})
    # seeded: each class's candidates shuffled by `seed`, classes taking turns (cnnlab.data.coco5),
    # so a frequent class early in the list cannot eat the images a later class shares with it.
    # study: study 002's loop, pycocotools' getImgIds order walked class after class, all train
    # before any val, an image shared by two classes going to the first that reaches it (`seed`
    # is unused). Not a bug, but the labels of shared images then depend on class order.
    selection: Literal["seeded", "study"] = "seeded"

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
    """An optimizer and its hyperparameters. A value left out (null) takes the preset's default
    when the optimizer is built (cnnlab.catalog.optimizer_settings): `torch` is torch.optim's own
    signature, `keras` is Keras' (study 004 used Keras' defaults)."""

    name: str = field(metadata={"choices": _optimizer_names})
    lr: float | None = field(default=None, metadata={"gt": 0})
    betas: tuple[float, float] | None = None  # adam, adamw
    eps: float | None = field(default=None, metadata={"gt": 0})  # adam, adamw, rmsprop
    weight_decay: float | None = field(default=None, metadata={"min": 0})
    momentum: float | None = field(default=None, metadata={"min": 0})  # sgd, rmsprop
    nesterov: bool | None = None  # sgd
    alpha: float | None = field(default=None, metadata={"gt": 0})  # rmsprop smoothing (Keras' rho)
    preset: Literal["torch", "keras"] = "torch"  # where the values left out come from

    def __post_init__(self) -> None:
        if self.name not in catalog.OPTIMIZERS:
            return  # the `choices` check has already named the valid ones
        takes = catalog.accepted(self.name)
        stray = [k for k in catalog.HYPERPARAMETERS
                 if k not in takes and getattr(self, k) is not None]
        if stray:
            raise ParamsError(f"optimizer.{stray[0]}: {self.name} has no such setting (it takes: "
                              f"{', '.join(takes)})")
        if self.nesterov and not self.momentum:
            raise ParamsError("optimizer.nesterov: needs momentum > 0")

    def settings(self) -> dict[str, object]:
        """Every hyperparameter the optimizer is built with, the preset's filling the gaps."""
        given = {key: getattr(self, key) for key in catalog.HYPERPARAMETERS}
        return catalog.optimizer_settings(self.name, self.preset, given)


@dataclass(frozen=True)
class Normalize:
    """Per-channel mean and std applied after scaling pixels to [0, 1]."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if min(self.std) <= 0:
            raise ParamsError(f"std must be > 0, got {list(self.std)}")


AUGMENT_OPS = ("hflip", "crop", "autoaugment")


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation of the uint8 images, on whole batches on the training device."""

    hflip: bool = False  # flip each image left-right with p=0.5
    crop_padding: int = field(default=0, metadata={"min": 0})  # random crop after zero padding
    autoaugment: Literal["none", "cifar10"] = "none"  # torchvision's policy, drawn per image
    order: tuple[str, ...] = AUGMENT_OPS  # the order the enabled ops run in
    # false: augment the stored images, before `preprocess` resizes them (cnnlab's choice: the
    # policy's magnitudes were tuned on 32x32 CIFAR-10). true: after the resize and crop, at
    # the model's input size, as study 001 did (there on normalised floats, a bug AutoAugment's
    # colour ops do not survive; here on the resized pixels rounded to uint8).
    after_preprocess: bool = False

    def enabled(self) -> bool:
        return self.hflip or self.crop_padding > 0 or self.autoaugment != "none"

    def __post_init__(self) -> None:
        if sorted(self.order) != sorted(AUGMENT_OPS):
            raise ParamsError(f"augment.order must list each of {', '.join(AUGMENT_OPS)} once, "
                              f"got {list(self.order)}")


@dataclass(frozen=True)
class Preprocess:
    """Resizing applied to every image after augmentation, before normalisation (both train and
    eval), e.g. the ImageNet weights' resize 256 then centre crop 224."""

    resize: int | None = field(default=None, metadata={"min": 1})  # square side, bilinear
    center_crop: int | None = field(default=None, metadata={"min": 1})


@dataclass(frozen=True)
class Scheduler:
    """Learning-rate schedule. onecycle and cosine step every batch; step, multistep and
    exponential every epoch (their step_size and milestones count epochs)."""

    name: Literal["none", "onecycle", "cosine", "step", "multistep", "exponential"] = "none"
    max_lr: float | None = field(default=None, metadata={"gt": 0})  # onecycle; null: optimizer lr
    pct_start: float = field(default=0.3, metadata={"gt": 0, "max": 1})  # onecycle warm-up share
    anneal_strategy: Literal["cos", "linear"] = "cos"  # onecycle
    div_factor: float = field(default=25.0, metadata={"gt": 0})  # onecycle: start = max_lr / this
    final_div_factor: float = field(default=1e4, metadata={"gt": 0})  # onecycle
    eta_min: float = field(default=0.0, metadata={"min": 0})  # cosine floor
    step_size: int = field(default=1, metadata={"min": 1})  # step: epochs between decays
    milestones: tuple[int, ...] = ()  # multistep: epochs where the lr decays
    gamma: float = field(default=0.1, metadata={"gt": 0})  # step, multistep, exponential


@dataclass(frozen=True)
class Speed:
    """How the loop runs on its device, not what it computes (cnnlab.fastpath). The defaults are
    the fastest that keep accuracy: bf16 autocast where the device has bf16 arithmetic (CUDA,
    CPUs with AVX512-BF16 or AMX), channels_last on CUDA and the CPU, fused optimizers on CUDA.
    Each is deterministic on the CPU, so CPU runs stay bit-identical from run to run."""

    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where native, else fp32
    channels_last: bool | None = None  # null: on CUDA and the CPU
    fused_optimizer: bool | None = None  # null: on CUDA, for the optimizers torch fuses
    compile: bool = False  # torch.compile the model: the first steps compile, long runs gain
    deterministic: bool = False  # on CUDA: deterministic kernels, no cuDNN autotuning


@dataclass(frozen=True)
class Experiment:
    model: str = field(metadata={"choices": _model_names})
    dataset: str = field(metadata={"choices": _dataset_names})
    epochs: int = field(metadata={"min": 1})
    batch_size: int = field(metadata={"min": 1})
    seed: int = field(metadata={"min": 0})  # initialisation, shuffling, augmentation, MixUp
    optimizer: OptimizerConfig
    scheduler: Scheduler = Scheduler()
    # Pretrained weights of a transfer model: imagenet (torchvision's download and cache),
    # none (random initialisation) or the path of a local state dict in torchvision's layout.
    weights: str = "none"
    init: Literal["default", "glorot_uniform"] = "default"  # glorot_uniform: Keras' init
    normalize: Normalize = Normalize()
    augment: Augment = Augment()
    preprocess: Preprocess = Preprocess()
    label_smoothing: float = field(default=0.0, metadata={"min": 0, "max": 1})
    mixup_alpha: float = field(default=0.0, metadata={"min": 0})  # 0: off; else Beta(a, a)
    grad_clip_norm: float | None = field(default=None, metadata={"gt": 0})  # max global L2 norm
    # Data selection, all drawn with data_seed (not seed), so a sweep over seeds keeps the data:
    data_seed: int = field(default=0, metadata={"min": 0})
    val_fraction: float = field(default=0.0, metadata={"min": 0, "max": 0.9})  # train -> val
    train_fraction: float = field(default=1.0, metadata={"gt": 0, "max": 1})  # of what is left
    eval_fraction: float = field(default=1.0, metadata={"gt": 0, "max": 1})  # of eval_split
    train_subset: int | None = field(default=None, metadata={"min": 1})  # a cap, in images
    eval_subset: int | None = field(default=None, metadata={"min": 1})  # a cap on eval_split
    eval_split: str = "test"
    also_evaluate: tuple[str, ...] = ()  # more splits to score (accuracy) beside eval_split
    eval_each_epoch: bool = False  # score eval_split and also_evaluate after every epoch
    # Study 001's protocol: its test loader used the training transform, so its scores are of
    # augmented test images (a flaw: the score then depends on random draws). true scores
    # eval_split that way too (seeded), as augmented_accuracy beside the clean accuracy.
    score_augmented: bool = False
    # Study 003 computed its test loss with the label-smoothed criterion. false: plain
    # cross-entropy, comparable across experiments; true: the study's smoothed test loss.
    smoothed_eval_loss: bool = False
    keep_best: bool = False  # keep the epoch best on eval_split too (needs eval_each_epoch)
    log_grad_norms: bool = False  # per-layer gradient norms at every loss record
    log_every: int = field(default=100, metadata={"min": 1})  # steps between loss records
    # auto: a free CUDA GPU (one per run under `dvc queue start -j N`), else MPS, else the CPU;
    # cuda:K: GPU K and no other (cnnlab.devices).
    device: str = field(default="auto", metadata={
        "pattern": r"auto|cpu|mps|cuda(:\d+)?", "hint": "use auto, cpu, mps, cuda or cuda:<index>"})
    speed: Speed = Speed()
    # Start from another experiment's trained model (its final weights) instead of the
    # initialiser's, with a fresh optimizer: study 004 trained SGD, then RMSprop, on top of its
    # Adam-trained model. Only under params.yaml's `chained:`, whose train stage depends on it.
    init_from: str | None = None

    def eval_batch_size(self) -> int:
        """Scoring batch: large for small images, smaller once they are resized to ImageNet
        size, where 1,000 float images alone would take 600 MB before any activation."""
        side = self.preprocess.center_crop or self.preprocess.resize
        return 1000 if side is None or side <= 64 else 64

    def input_side(self, stored_side: int) -> int:
        """Side of the square images the model sees: the preprocess crop or resize if there
        is one, else the side the dataset is stored at."""
        return self.preprocess.center_crop or self.preprocess.resize or stored_side

    def __post_init__(self) -> None:
        if self.keep_best and not self.eval_each_epoch:
            raise ParamsError("keep_best needs eval_each_epoch: true (the best epoch is chosen "
                              "on the per-epoch scores)")
        if self.score_augmented and not self.augment.enabled():
            raise ParamsError("score_augmented: true needs an augmentation to apply (augment "
                              "has none enabled)")
        if self.smoothed_eval_loss and self.label_smoothing == 0:
            raise ParamsError("smoothed_eval_loss: true needs label_smoothing > 0 (with none, "
                              "the smoothed loss is the plain one)")
        if self.eval_split in self.also_evaluate:
            raise ParamsError(f"also_evaluate repeats eval_split {self.eval_split!r}")
        if self.weights != "none":
            if not catalog.MODELS.get(self.model, True):  # an unknown name: `choices` says so
                raise ParamsError(f"weights: model {self.model!r} is trained from scratch and "
                                  f"takes no pretrained weights (use weights: none)")
            if self.init != "default":
                raise ParamsError(f"init: {self.init} would overwrite the pretrained weights "
                                  f"(use init: default, or weights: none)")


@dataclass(frozen=True)
class Profile:
    """Caps applied to every experiment, for quick smoke runs; null keeps the published recipe."""

    max_epochs: int | None = field(default=None, metadata={"min": 1})
    max_train_images: int | None = field(default=None, metadata={"min": 1})
    max_eval_images: int | None = field(default=None, metadata={"min": 1})


@dataclass(frozen=True)
class Params:
    data: DataConfig
    experiments: dict[str, Experiment]
    # Experiments that start from another one's trained model (Experiment.init_from). Apart from
    # `experiments` because dvc.yaml's train_chained stage depends on the model each one names.
    chained: dict[str, Experiment] = field(default_factory=dict)
    profile: Profile = Profile()

    def __post_init__(self) -> None:
        self._check_chains()
        for name in self.all_experiments():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ParamsError(f"experiments.{name}: experiment names may use only a-z, 0-9 "
                                  f"and _ (they become file names)")
            if name == "report":
                raise ParamsError("experiments.report: the name 'report' is reserved (the "
                                  "report stage writes metrics/report/, the folder this "
                                  "experiment's outputs would use); choose another name")

    def all_experiments(self) -> dict[str, Experiment]:
        """Every experiment: those of `experiments`, then the chained ones."""
        return {**self.experiments, **self.chained}

    def _check_chains(self) -> None:
        for name, exp in self.experiments.items():
            if exp.init_from is not None:
                raise ParamsError(f"experiments.{name}.init_from: an experiment that starts "
                                  f"from another one's model goes under chained:, whose "
                                  f"train stage depends on that model")
        for name in self.chained:
            if name in self.experiments:
                raise ParamsError(f"chained.{name}: also defined under experiments")
        for name, exp in self.chained.items():
            parent = self.all_experiments().get(exp.init_from or "")
            if parent is None or exp.init_from == name:
                raise ParamsError(f"chained.{name}.init_from: {exp.init_from!r} is not another "
                                  f"experiment (choose from: "
                                  f"{', '.join(n for n in self.all_experiments() if n != name)})")
            if (parent.model, parent.dataset) != (exp.model, exp.dataset):
                raise ParamsError(f"chained.{name}.init_from: {exp.init_from} trains "
                                  f"{parent.model} on {parent.dataset}, this experiment "
                                  f"{exp.model} on {exp.dataset} (they must be the same)")
            seen = [name]
            while (exp := self.chained.get(seen[-1])) is not None:
                if exp.init_from in seen:
                    raise ParamsError(f"chained.{name}.init_from: a cycle "
                                      f"({' -> '.join([*seen, exp.init_from])})")
                seen.append(exp.init_from)

    def experiment(self, name: str) -> Experiment:
        """The named experiment with the profile's caps applied."""
        every = self.all_experiments()
        if name not in every:
            raise ParamsError(f"unknown experiment {name!r} (choose from: "
                              f"{', '.join(every)})")
        exp = every[name]
        caps = {}
        if self.profile.max_epochs is not None:
            caps["epochs"] = min(exp.epochs, self.profile.max_epochs)
        if self.profile.max_train_images is not None:
            caps["train_subset"] = min(exp.train_subset or self.profile.max_train_images,
                                       self.profile.max_train_images)
        if self.profile.max_eval_images is not None:
            caps["eval_subset"] = min(exp.eval_subset or self.profile.max_eval_images,
                                      self.profile.max_eval_images)
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
