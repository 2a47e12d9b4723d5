"""Every registered model builds, runs forward and backward, and has EXPERIMENTS.md's size."""

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, build_model, count_params

# Parameter counts from EXPERIMENTS.md, with the input each model is specified for (the transfer
# models are specified for 3x224x224 but are tested at 32x32, which their adaptive pooling allows,
# to keep this fast). Trainable counts of the transfer models are checked in test_transfer.py.
#
# vgg16_tl: torchvision's VGG16 has 138,357,544 parameters with its 1000-class head.
#   features (13 convs, 3x3 kernels, with bias): 1,792 + 36,928 + 73,856 + 147,584 + 295,168
#     + 2 x 590,080 + 1,180,160 + 5 x 2,359,808 = 14,714,688
#   classifier: 25088*4096+4096 = 102,764,544; 4096*4096+4096 = 16,781,312; 10-way head
#     4096*10+10 = 40,970 (1000-way: 4,097,000)
#   total 14,714,688 + 102,764,544 + 16,781,312 + 40,970 = 134,301,514
#     (= 138,357,544 - 4,097,000 + 40,970)
# resnet18_tl: torchvision's ResNet18 has 11,689,512 with its Linear(512, 1000) head (513,000);
#   the 10-way head has 512*10+10 = 5,130: 11,689,512 - 513,000 + 5,130 = 11,181,642
EXPECTED = {
    "ann": (3_411_722, (3, 32, 32), 10),
    "cnn": (2_122_186, (3, 32, 32), 10),
    "hw4net1": (406_885, (3, 64, 64), 5),
    "hw4net2": (529_765, (3, 64, 64), 5),
    "hw4net3": (622_245, (3, 64, 64), 5),
    "deepcnn": (4_079_429, (3, 32, 32), 10),
    "dropcnn": (315_722, (3, 32, 32), 10),
    "vgg16_tl": (134_301_514, (3, 32, 32), 10),
    "resnet18_tl": (11_181_642, (3, 32, 32), 10),
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
    # Frozen parameters (the transfer models') get no gradient; every trainable one does.
    # A sum is finite iff every element is (for gradients this small), and on VGG16's 100M-entry
    # classifier gradient it takes milliseconds where isfinite(...).all() takes seconds.
    for p in model.parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad.sum())
        else:
            assert p.grad is None


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
