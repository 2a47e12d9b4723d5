"""Every registered model builds, runs forward and backward, and has EXPERIMENTS.md's size."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

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
# hw4net3_shared (the study's Net3, one conv used ten times): conv1 3*16*9+16 = 448, conv2
#   16*32*9+32 = 4,640, the shared conv 32*32*9+32 = 9,248, fc1 8192*64+64 = 524,352, fc2
#   64*5+5 = 325: 539,013, the study's printed count. hw4net3 has nine more convs: +83,232.
EXPECTED = {
    "ann": (3_411_722, (3, 32, 32), 10),
    "cnn": (2_122_186, (3, 32, 32), 10),
    "hw4net1": (406_885, (3, 64, 64), 5),
    "hw4net2": (529_765, (3, 64, 64), 5),
    "hw4net3": (622_245, (3, 64, 64), 5),
    "hw4net3_shared": (539_013, (3, 64, 64), 5),
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


def study_net3(x, conv1, conv2, conv_repeat, fc1, fc2, repeats=10):
    """The study's HW4Net3.forward with torch.nn.functional, each layer a (weight, bias) pair."""
    x = F.max_pool2d(F.relu(F.conv2d(x, *conv1, padding=1)), 2, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, *conv2, padding=1)), 2, 2)
    for _ in range(repeats):
        x = F.relu(F.conv2d(x, *conv_repeat, padding=1))
    x = x.view(x.shape[0], -1)
    return F.linear(F.relu(F.linear(x, *fc1)), *fc2)


def layer(model, name):
    module = model.get_submodule(name)
    return module.weight, module.bias


def test_hw4net3_shared_is_one_conv_applied_ten_times():
    torch.manual_seed(0)
    model = build_model("hw4net3_shared", 5)
    weights = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
    assert [n for n, _ in weights] == ["conv1.weight", "conv2.weight", "conv3.weight",
                                       "fc1.weight", "fc2.weight"]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3  # the repeats are one module, one set of weights
    calls = []
    model.conv3.register_forward_hook(lambda m, i, o: calls.append(m))
    x = torch.randn(3, 3, 64, 64)
    out = model(x)
    assert out.shape == (3, 5)
    assert len(calls) == 10 and all(m is model.conv3 for m in calls)
    layers = [layer(model, n) for n in ("conv1", "conv2", "conv3", "fc1", "fc2")]
    torch.testing.assert_close(out, study_net3(x, *layers), rtol=0, atol=0)
    # channels_last input (cnnlab's fast path) gives the same logits
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), out)


def test_hw4net3_shared_gradient_is_the_sum_over_its_ten_uses_and_one_step_moves_all():
    torch.manual_seed(1)
    model = build_model("hw4net3_shared", 5)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 4])
    F.cross_entropy(model(x), y).backward()
    # Reference: the same forward with ten separate copies of the shared weight; the shared
    # layer's gradient is the sum of the ten copies' gradients.
    w, b = (t.detach().clone() for t in layer(model, "conv3"))
    copies = [(w.clone().requires_grad_(), b.clone().requires_grad_()) for _ in range(10)]
    fixed = [tuple(t.detach() for t in layer(model, n)) for n in ("conv1", "conv2")]
    heads = [tuple(t.detach() for t in layer(model, n)) for n in ("fc1", "fc2")]
    h = F.max_pool2d(F.relu(F.conv2d(x, *fixed[0], padding=1)), 2, 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, *fixed[1], padding=1)), 2, 2)
    for cw, cb in copies:
        h = F.relu(F.conv2d(h, cw, cb, padding=1))
    F.cross_entropy(F.linear(F.relu(F.linear(h.flatten(1), *heads[0])), *heads[1]), y).backward()
    torch.testing.assert_close(model.conv3.weight.grad, sum(cw.grad for cw, _ in copies))
    torch.testing.assert_close(model.conv3.bias.grad, sum(cb.grad for _, cb in copies))
    # One SGD step moves the one weight every repeat uses: the model still equals the
    # study's forward with the stepped weights in all ten places.
    before = model.conv3.weight.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(model.conv3.weight, before)
    with torch.no_grad():
        layers = [layer(model, n) for n in ("conv1", "conv2", "conv3", "fc1", "fc2")]
        torch.testing.assert_close(model(x), study_net3(x, *layers), rtol=0, atol=0)


def test_deepcnn_convs_have_no_bias():
    model = build_model("deepcnn", 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.bias is None for c in convs)
