"""Optimizers are built by name with their settings; prepared datasets load or say why not."""

import json
from importlib import metadata

import numpy as np
import pytest
import torch

from cnnlab import catalog
from cnnlab.config import OptimizerConfig
from cnnlab.data.prepared import PreparedDataset, Split, load_prepared, save_prepared
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.provenance import run_info
from cnnlab.train.keras_optimizers import KerasAdam, KerasRMSprop
from cnnlab.train.optimizers import OPTIMIZERS, build_optimizer


@pytest.mark.parametrize(
    ("cfg", "cls", "expected"),
    [
        (OptimizerConfig("adam", 1e-3, betas=(0.9, 0.99)), torch.optim.Adam,
         {"lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8}),
        (OptimizerConfig("adamw", 2e-3, weight_decay=0.05), torch.optim.AdamW,
         {"lr": 2e-3, "weight_decay": 0.05}),
        (OptimizerConfig("sgd", 0.1, momentum=0.9, nesterov=True), torch.optim.SGD,
         {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (OptimizerConfig("rmsprop", 1e-3, alpha=0.9, eps=1e-7), torch.optim.RMSprop,
         {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
    ],
)
def test_each_optimizer_gets_its_hyperparameters(cfg, cls, expected):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert {k: group[k] for k in expected} == expected


def test_registry_and_errors():
    assert set(OPTIMIZERS) == {"adam", "adamw", "sgd", "rmsprop"}
    with pytest.raises(CnnlabError, match="unknown optimizer 'lion'"):
        build_optimizer([], OptimizerConfig("lion", 1e-3))
    with pytest.raises(CnnlabError, match="nesterov: needs momentum > 0"):
        OptimizerConfig("sgd", 0.1, nesterov=True)
    with pytest.raises(CnnlabError, match=r"optimizer.momentum: adam has no such setting "
                                          r"\(it takes: lr, betas, eps, weight_decay\)"):
        OptimizerConfig("adam", 1e-3, momentum=0.9)


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [  # Keras 3: Adam(1e-3, 0.9, 0.999, 1e-7), SGD(0.01, momentum 0), RMSprop(1e-3, rho 0.9, 1e-7)
        # Keras' own update rules for Adam and RMSprop (epsilon placed as Keras places it)
        ("adam", KerasAdam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}),
        ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
        ("rmsprop", KerasRMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7,
                                          "momentum": 0.0}),
    ],
)
def test_keras_preset_fills_what_is_left_out(name, cls, expected):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))],
                          OptimizerConfig(name, preset="keras"))
    assert type(opt) is cls
    assert {k: opt.param_groups[0][k] for k in expected} == expected
    # A value given in params wins over the preset.
    given = build_optimizer([torch.nn.Parameter(torch.zeros(2))],
                            OptimizerConfig(name, lr=0.5, preset="keras"))
    assert given.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_torch_preset_is_torchs_own_signature(name):
    # Built with nothing given, the optimizer holds exactly what torch would by itself (RMSprop's
    # lr 1e-2 and AdamW's weight decay 1e-2 differ from Adam's): torch is the reference.
    ours = build_optimizer([torch.nn.Parameter(torch.zeros(2))], OptimizerConfig(name))
    theirs = OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2))])
    for key in catalog.accepted(name):
        assert ours.param_groups[0][key] == theirs.param_groups[0][key], key


def tiny_dataset():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[1, 0, 1, 2] = 9
    return PreparedDataset("toy", ("a", "b"), {"train": Split(images, np.array([0, 1, 1, 0])),
                                               "test": Split(images[:2], np.array([1, 0]))},
                           {"archive": "x.tar.gz"})


def test_prepared_round_trip_and_meta(tmp_path):
    save_prepared(tiny_dataset(), tmp_path / "toy")
    loaded = load_prepared(tmp_path / "toy")
    assert loaded.classes == ("a", "b") and loaded.split("train").images[1, 0, 1, 2] == 9
    meta = json.loads((tmp_path / "toy" / "meta.json").read_text())
    assert meta["splits"] == {"train": 4, "test": 2}
    assert meta["class_counts"] == {"train": [2, 2], "test": [1, 1]}
    with pytest.raises(CnnlabError, match="has no split 'val' \\(it has: train, test\\)"):
        loaded.split("val")


def test_missing_or_damaged_prepared_dataset_is_a_clear_error(tmp_path):
    missing = r"prepared dataset not found at .*nothing \(run its prepare stage"
    with pytest.raises(CnnlabError, match=missing):
        load_prepared(tmp_path / "nothing")
    save_prepared(tiny_dataset(), tmp_path / "toy")
    (tmp_path / "toy" / "test_labels.npy").write_bytes(b"garbage")
    with pytest.raises(CnnlabError, match="is damaged \\(test\\)"):
        load_prepared(tmp_path / "toy")


def test_labels_out_of_range_are_refused(tmp_path):
    bad = PreparedDataset("toy", ("a",), {"train": Split(np.zeros((1, 2, 2, 3), np.uint8),
                                                         np.array([3]))})
    with pytest.raises(CnnlabError, match="labels outside 0..0"):
        save_prepared(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_run_info_records_revision_versions_and_device():
    info = run_info("cpu (2 threads)")
    assert info["device"] == "cpu (2 threads)"
    assert info["torch_version"] == metadata.version("torch")
    assert info["dvc_version"] == metadata.version("dvc")
    assert len(info["git_rev"]) in (40, len("unknown"))
