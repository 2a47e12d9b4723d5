"""params.yaml is validated at load: every mistake names its key and, where there is a list,
the valid choices."""

import copy

import pytest
import yaml

from cnnlab.config import Params, load_params, parse_params
from cnnlab.schema import ParamsError


@pytest.fixture(scope="module")
def raw() -> dict:
    with open("params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def with_change(raw: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def test_project_params_load_with_every_study000_experiment():
    params = load_params("params.yaml")
    assert isinstance(params, Params)
    assert {"ann", "cnn", "cnn_aug"} <= set(params.experiments)
    cnn_aug = params.experiment("cnn_aug")
    assert (cnn_aug.augment.hflip, cnn_aug.augment.crop_padding) == (True, 4)
    assert params.experiment("cnn").optimizer.lr == pytest.approx(1e-3)
    assert params.experiment("ann").normalize.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("experiments.cnn.optimizr", {}, r"experiments\.cnn\.optimizr: unknown key \(valid keys: model, "),
        ("experiments.cnn.model", "resnet9000", r"experiments\.cnn\.model: unknown name 'resnet9000' \(choose from: ann, cnn"),
        ("experiments.cnn.optimizer.name", "adamx", r"experiments\.cnn\.optimizer\.name: unknown name 'adamx' \(choose from: adam, adamw, rmsprop, sgd\)"),
        ("experiments.cnn.dataset", "mnist", r"experiments\.cnn\.dataset: unknown name 'mnist' \(choose from: cifar10"),
        ("experiments.cnn.optimizer.lr", "0.001", r"experiments\.cnn\.optimizer\.lr: expected float, got str '0\.001'"),
        ("experiments.cnn.epochs", 0, r"experiments\.cnn\.epochs: must be >= 1, got 0"),
        ("experiments.cnn.batch_size", -4, r"experiments\.cnn\.batch_size: must be >= 1, got -4"),
        ("experiments.cnn.epochs", 2.5, r"experiments\.cnn\.epochs: expected int, got float"),
        ("experiments.cnn.epochs", True, r"experiments\.cnn\.epochs: expected int, got bool"),
        ("experiments.cnn.augment.hflip", "yes", r"experiments\.cnn\.augment\.hflip: expected bool"),
        ("experiments.cnn.normalize.mean", [0.5, 0.5], r"experiments\.cnn\.normalize\.mean: expected 3 values, got 2"),
        ("experiments.cnn.normalize.std", [0.5, 0.0, 0.5], r"experiments\.cnn\.normalize: std must be > 0"),
        ("experiments.cnn.device", "tpu",
         r"experiments\.cnn\.device: 'tpu' is not valid \(use auto, cpu, mps, cuda or cuda:<index>\)"),
        ("experiments.cnn.device", "cuda:x", r"experiments\.cnn\.device: 'cuda:x' is not valid"),
        ("data.cifar10.md5", "xyz", r"data\.cifar10\.md5: 'xyz' is not valid \(32 lowercase hex digits"),
        ("profile.max_epochs", 0, r"profile\.max_epochs: must be >= 1"),
        ("experiments.cnn.optimizer.lr", 0, r"experiments\.cnn\.optimizer\.lr: must be > 0"),
    ],
)
def test_bad_params_fail_at_load_naming_the_key(raw, dotted, value, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(with_change(raw, dotted, value))


def test_missing_required_key_is_named(raw):
    data = copy.deepcopy(raw)
    del data["experiments"]["ann"]["epochs"]
    with pytest.raises(ParamsError, match=r"experiments\.ann\.epochs: missing required key"):
        parse_params(data)


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(ParamsError, match=r"unknown experiment 'cnnn' \(choose from: ann, cnn, cnn_aug"):
        load_params("params.yaml").experiment("cnnn")


def test_experiment_names_must_be_safe_file_names(raw):
    data = copy.deepcopy(raw)
    data["experiments"]["../evil"] = data["experiments"]["cnn"]
    with pytest.raises(ParamsError, match="may use only a-z"):
        parse_params(data)


def test_profile_caps_epochs_and_train_and_eval_images(raw):
    data = with_change(raw, "profile", {"max_epochs": 1, "max_train_images": 500,
                                        "max_eval_images": 100})
    exp = parse_params(data).experiment("cnn")
    assert (exp.epochs, exp.train_subset, exp.eval_subset) == (1, 500, 100)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("experiments.deepcnn.scheduler.name", "cyclic",
         r"scheduler\.name: 'cyclic' is not valid \(choose from: none, onecycle, cosine"),
        ("experiments.deepcnn.mixup_alpha", -0.4, r"mixup_alpha: must be >= 0"),
        ("experiments.deepcnn.augment.autoaugment", "imagenet", r"autoaugment: 'imagenet' is not"),
        ("experiments.deepcnn.augment.order", ["hflip", "crop"], r"must list each of hflip, crop"),
        ("experiments.dropcnn_sgd.optimizer.preset", "jax", r"preset: 'jax' is not valid"),
        ("experiments.dropcnn_sgd.optimizer.betas", [0.9, 0.99], r"sgd has no such setting"),
        ("experiments.deepcnn.eval_each_epoch", False, r"keep_best needs eval_each_epoch"),
        ("experiments.cnn.weights", "imagenet", r"'cnn' is trained from scratch"),
        ("experiments.dropcnn_adam.val_fraction", 1.5, r"val_fraction: must be <= 0\.9"),
        ("experiments.vgg16_tl.train_fraction", 0, r"train_fraction: must be > 0"),
    ],
)
def test_recipe_params_are_checked_at_load(raw, key, value, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(with_change(raw, key, value))


def test_onecycle_max_lr_defaults_to_the_optimizer_lr(raw):
    import torch

    from cnnlab.train.optimizers import build_optimizer
    from cnnlab.train.schedulers import build_scheduler

    data = with_change(raw, "experiments.deepcnn.scheduler", {"name": "onecycle"})
    exp = parse_params(data).experiment("deepcnn")
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], exp.optimizer)
    build_scheduler(optimizer, exp.scheduler, epochs=1, steps_per_epoch=4)
    assert optimizer.param_groups[0]["max_lr"] == 0.00182  # deepcnn's lr, as OneCycleLR keeps it


def test_invalid_yaml_is_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("experiments: [unclosed\n")
    with pytest.raises(ParamsError) as info:
        load_params(bad)
    assert "\n" not in str(info.value) and "not valid YAML" in str(info.value)
