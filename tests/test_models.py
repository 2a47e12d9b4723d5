"""Every registered model builds, runs forward and backward, and has EXPERIMENTS.md's size."""

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, build_model, count_params

# Parameter counts from EXPERIMENTS.md, with the input each model is specified for.
EXPECTED = {
    "ann": (3_411_722, (3, 32, 32), 10),
    "cnn": (2_122_186, (3, 32, 32), 10),
    "hw4net1": (406_885, (3, 64, 64), 5),
    "hw4net2": (529_765, (3, 64, 64), 5),
    "hw4net3": (622_245, (3, 64, 64), 5),
    "deepcnn": (4_079_429, (3, 32, 32), 10),
    "dropcnn": (315_722, (3, 32, 32), 10),
}


def test_every_registered_model_has_an_expected_count():
    assert set(MODELS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_and_parameter_count(name):
    params, shape, classes = EXPECTED[name]
    torch.manual_seed(0)
    model = build_model(name, classes)
    assert count_params(model) == params
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, classes)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_model_lists_choices():
    with pytest.raises(CnnlabError, match=r"unknown model 'vgg99' \(choose from: ann, cnn"):
        build_model("vgg99", 10)


def test_hw4net3_extra_convs_are_distinct_layers():
    """The study reused one conv ten times; here each extra conv has its own weights."""
    model = build_model("hw4net3", 5)
    extra = [model.get_submodule(f"conv{i}") for i in range(3, 13)]
    assert len({id(m) for m in extra}) == 10
    assert len({m.weight.data_ptr() for m in extra}) == 10


def test_deepcnn_convs_have_no_bias():
    model = build_model("deepcnn", 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.bias is None for c in convs)
