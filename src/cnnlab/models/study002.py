"""Study 002's three nets for 64x64 RGB input (COCO 5-class), trained with Adam (recipe C).

Layers are named (conv1, conv2, ..., fc1, fc2) so per-layer gradient norms read as the study's
layers. hw4net3 gives each of its ten extra convs its own weights: the study reused one layer
instance ten times, which is why it reported 539,013 parameters instead of 622,245.
hw4net3_shared is the study's own Net3, that one layer applied ten times: one set of weights
(its gradient is the sum over the ten uses), kept as a switch to reproduce the study. The
study's text asks for ten extra layers; its code as printed shows the call three times across a
page break. The count cannot be read off its 539,013 params (the same for any count); cnnlab
follows the text.
"""

from collections import OrderedDict

import torch
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


class SharedRepeatNet(nn.Module):
    """Study 002's HW4Net3 as the study wrote it: conv1, conv2 (padding 1, each followed by ReLU
    and 2x2 max pooling), then ONE Conv(32,32,k3,p1) applied `repeats` times with a ReLU after
    each use, then fc1, fc2. `conv3` is the study's `conv_repeat` (named so that the layer
    order of the gradient-norm plots stays conv1 < conv2 < conv3 < fc1)."""

    def __init__(self, num_classes: int, repeats: int = 10) -> None:
        super().__init__()
        self.repeats = repeats
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 16 * 16, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        for _ in range(self.repeats):
            x = torch.relu(self.conv3(x))
        # flatten, not the study's view(): the same (N, C*H*W) order, and it also works on the
        # channels_last tensors cnnlab's fast path feeds.
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


@register("hw4net3_shared")
def hw4net3_shared(num_classes: int) -> nn.Module:
    return SharedRepeatNet(num_classes, repeats=10)
