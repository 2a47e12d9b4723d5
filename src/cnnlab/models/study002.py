"""Study 002's three nets for 64x64 RGB input (COCO 5-class), trained with plain SGD.

Layers are named (conv1, conv2, ..., fc1, fc2) so per-layer gradient norms read as the study's
layers. hw4net3 gives each of its ten extra convs its own weights: the study reused one layer
instance ten times, which is why it reported 539,013 parameters instead of 622,245.
"""

from collections import OrderedDict

from torch import nn

from cnnlab.models.registry import register


def _net(padding: int, extra_convs: int, num_classes: int) -> nn.Sequential:
    side = 16 if padding else 14  # 64 -> conv -> pool -> conv -> pool
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 16, 3, padding=padding), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(16, 32, 3, padding=padding), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
    )
    for i in range(3, 3 + extra_convs):
        layers[f"conv{i}"] = nn.Conv2d(32, 32, 3, padding=1)
        layers[f"relu{i}"] = nn.ReLU()
    layers.update(flatten=nn.Flatten(), fc1=nn.Linear(32 * side * side, 64), relu_fc=nn.ReLU(),
                  fc2=nn.Linear(64, num_classes))
    return nn.Sequential(layers)


@register("hw4net1")
def hw4net1(num_classes: int) -> nn.Module:
    return _net(padding=0, extra_convs=0, num_classes=num_classes)


@register("hw4net2")
def hw4net2(num_classes: int) -> nn.Module:
    return _net(padding=1, extra_convs=0, num_classes=num_classes)


@register("hw4net3")
def hw4net3(num_classes: int) -> nn.Module:
    return _net(padding=1, extra_convs=10, num_classes=num_classes)
