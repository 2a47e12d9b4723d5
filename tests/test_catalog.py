"""The light name table that params are checked against, against the real registry and torch;
and loading params importing neither torch nor torchvision."""

import inspect
import subprocess
import sys

import pytest
import torch

from cnnlab import catalog
from cnnlab.models import MODELS, accepts_weights
from cnnlab.train.optimizers import OPTIMIZERS


def test_catalog_names_exactly_the_registered_models_and_which_take_weights():
    assert set(catalog.MODELS) == set(MODELS)
    assert {name: accepts_weights(name) for name in MODELS} == catalog.MODELS


def test_catalog_names_exactly_the_optimizers_built():
    assert set(catalog.OPTIMIZERS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_torch_preset_is_torch_optims_own_signature(name):
    signature = inspect.signature(OPTIMIZERS[name]).parameters
    expected = {}
    for key in catalog.HYPERPARAMETERS:
        if key in signature:
            value = signature[key].default
            if isinstance(value, torch.Tensor):
                value = value.item()
            expected[key] = value
    assert catalog.OPTIMIZER_DEFAULTS["torch"][name] == expected
    assert catalog.accepted(name) == tuple(expected)
    assert set(catalog.OPTIMIZER_DEFAULTS["keras"][name]) == set(expected)


def test_loading_params_imports_neither_torch_nor_torchvision():
    # A fresh interpreter: in this one, the tests have long imported torch.
    probe = ("import sys; from cnnlab.config import load_params; load_params('params.yaml'); "
             "print(sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=catalog.__file__.rsplit("/src/", 1)[0])
    assert out.stdout.strip() == "[]"


def test_a_stage_imports_torchvision_and_sklearns_splitter_only_when_its_recipe_needs_them():
    # Each stage is a fresh process: torchvision (which pulls in torch._dynamo) and
    # sklearn.model_selection cost ~1.5 s each to import, so they load inside AutoAugment's table
    # builder and the hold-out split, not when the data modules are imported.
    probe = ("import sys; import cnnlab.data.augment, cnnlab.data.selection, "
             "cnnlab.evaluate.scoring; print(sorted(m for m in "
             "('torchvision', 'sklearn.model_selection') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=catalog.__file__.rsplit("/src/", 1)[0])
    assert out.stdout.strip() == "[]"
