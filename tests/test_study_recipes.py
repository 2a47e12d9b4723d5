"""params.yaml against the studies' recipes, value by value.

RECIPES is written from the studies (recipes A-E), not from params.yaml: every experiment's model,
data, batch, epochs, optimizer with every hyperparameter it is built with, schedule, smoothing,
MixUp, clipping, augmentation and its order, preprocessing, normalisation, subsets and split. A
changed value in params.yaml fails here, naming the experiment and the key.
"""

import pytest
import torch

from cnnlab.config import Experiment, load_params
from cnnlab.train.keras_optimizers import KerasAdam, KerasRMSprop
from cnnlab.train.optimizers import build_optimizer

HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # pixels scaled to [0, 1], nothing more
TORCH_ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}

# Recipe A (study 000): normalise 0.5/0.5, batch 64, Adam lr 1e-3, 5 epochs, loss every 100 steps.
A = {"dataset": "cifar10", "batch_size": 64, "epochs": 5, "optimizer": ("adam", TORCH_ADAM),
     "rule": torch.optim.Adam, "scheduler": "none", "label_smoothing": 0.0, "mixup_alpha": 0.0,
     "grad_clip_norm": None, "augment": (), "normalize": HALF, "preprocess": (None, None),
     "weights": "none", "init": "default", "subsets": (1.0, 1.0, 0.0), "eval_split": "test",
     "keep_best": False, "log_every": 100, "init_from": None}
# Recipe B (study 001): 10% subsets, the weights' preprocessing, AutoAugment then flip on the
# uint8 image, Adam lr 1e-3, 5 epochs, batch 64, ImageNet weights.
B = {**A, "augment": ("autoaugment", "hflip"),
     "normalize": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "preprocess": (256, 224),
     "weights": "imagenet", "subsets": (0.1, 0.1, 0.0), "log_every": 10}
# Recipe C (study 002): COCO 5-class, normalise 0.5/0.5, Adam lr 1e-3 betas (0.9, 0.99), 15
# epochs, batch 4, running loss every 100 iterations, scored on val.
C = {**A, "dataset": "coco5", "batch_size": 4, "epochs": 15,
     "optimizer": ("adam", {**TORCH_ADAM, "betas": (0.9, 0.99)}), "eval_split": "val"}
# Recipe D (study 003): flip, RandomCrop(32, pad 4), AutoAugment; CIFAR mean/std; batch 128;
# smoothing 0.04; AdamW lr 0.00182, weight decay 3.5e-5; OneCycle max_lr 0.00182 x 6.74, pct 0.3,
# cosine, per batch; MixUp 0.4; clipping 1.0; 150 epochs; best and final epoch.
D = {**A, "batch_size": 128, "epochs": 150,
     "optimizer": ("adamw", {**TORCH_ADAM, "lr": 0.00182, "weight_decay": 3.5e-5}),
     "rule": torch.optim.AdamW,
     "scheduler": ("onecycle", pytest.approx(0.00182 * 6.74), 0.3, "cos"),
     "label_smoothing": 0.04, "mixup_alpha": 0.4, "grad_clip_norm": 1.0,
     "augment": ("hflip", "crop 4", "autoaugment"),
     "normalize": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), "keep_best": True}
# Recipe E (study 004): pixels in [0, 1], 20% of train held out as val, 15 epochs, batch 64,
# Keras' defaults: Glorot init; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-7; SGD lr 0.01, no
# momentum; RMSprop lr 1e-3, rho 0.9, eps 1e-7, each with Keras' own update rule.
E = {**A, "epochs": 15, "normalize": UNIT, "init": "glorot_uniform", "subsets": (1.0, 1.0, 0.2)}
KERAS_ADAM = ("adam", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0})
KERAS_SGD = ("sgd", {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0})
KERAS_RMSPROP = ("rmsprop", {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0,
                             "weight_decay": 0.0})

RECIPES = {
    "ann": {**A, "model": "ann"},
    "cnn": {**A, "model": "cnn"},
    "cnn_aug": {**A, "model": "cnn", "augment": ("hflip", "crop 4")},
    "vgg16_tl": {**B, "model": "vgg16_tl"},
    "resnet18_tl": {**B, "model": "resnet18_tl"},
    "hw4net1": {**C, "model": "hw4net1"},
    "hw4net2": {**C, "model": "hw4net2"},
    "hw4net3": {**C, "model": "hw4net3"},
    "hw4net3_shared": {**C, "model": "hw4net3_shared"},
    "deepcnn": {**D, "model": "deepcnn"},
    "dropcnn_adam": {**E, "model": "dropcnn", "optimizer": KERAS_ADAM, "rule": KerasAdam},
    "dropcnn_sgd": {**E, "model": "dropcnn", "optimizer": KERAS_SGD, "rule": torch.optim.SGD},
    "dropcnn_rmsprop": {**E, "model": "dropcnn", "optimizer": KERAS_RMSPROP,
                        "rule": KerasRMSprop},
    # The study's own chain: SGD on the Adam-trained model, then RMSprop on that.
    "dropcnn_sgd_chained": {**E, "model": "dropcnn", "optimizer": KERAS_SGD,
                            "rule": torch.optim.SGD, "init_from": "dropcnn_adam"},
    "dropcnn_rmsprop_chained": {**E, "model": "dropcnn", "optimizer": KERAS_RMSPROP,
                                "rule": KerasRMSprop, "init_from": "dropcnn_sgd_chained"},
}


def augment_ops(exp: Experiment) -> tuple[str, ...]:
    """The enabled augmentation ops, in the order they run."""
    aug, ops = exp.augment, []
    for op in aug.order:
        if op == "hflip" and aug.hflip:
            ops.append("hflip")
        elif op == "crop" and aug.crop_padding:
            ops.append(f"crop {aug.crop_padding}")
        elif op == "autoaugment" and aug.autoaugment != "none":
            ops.append("autoaugment")
    return tuple(ops)


def recipe(exp: Experiment) -> dict:
    """What params.yaml makes of an experiment, in RECIPES' terms."""
    s = exp.scheduler
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], exp.optimizer)
    return {
        "model": exp.model, "dataset": exp.dataset, "batch_size": exp.batch_size,
        "epochs": exp.epochs, "optimizer": (exp.optimizer.name, exp.optimizer.settings()),
        "rule": type(optimizer),
        "scheduler": "none" if s.name == "none" else (s.name, s.max_lr, s.pct_start,
                                                      s.anneal_strategy),
        "label_smoothing": exp.label_smoothing, "mixup_alpha": exp.mixup_alpha,
        "grad_clip_norm": exp.grad_clip_norm, "augment": augment_ops(exp),
        "normalize": (tuple(exp.normalize.mean), tuple(exp.normalize.std)),
        "preprocess": (exp.preprocess.resize, exp.preprocess.center_crop),
        "weights": exp.weights, "init": exp.init,
        "subsets": (exp.train_fraction, exp.eval_fraction, exp.val_fraction),
        "eval_split": exp.eval_split, "keep_best": exp.keep_best, "log_every": exp.log_every,
        "init_from": exp.init_from,
    }


def test_every_experiment_has_a_recipe_here():
    assert set(load_params().all_experiments()) == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_params_yaml_holds_the_studys_recipe(name):
    params = load_params()
    assert params.profile.max_epochs is None and params.profile.max_train_images is None
    got, want = recipe(params.experiment(name)), RECIPES[name]
    for key in want:
        assert got[key] == want[key], f"{name}.{key}: params.yaml gives {got[key]!r}, the " \
                                      f"study's recipe {want[key]!r}"

