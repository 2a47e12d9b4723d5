"""Study 000's models: an MLP baseline and a two-conv CNN for 32x32 RGB input (CIFAR-10,
recipe A)."""

from torch import nn

from cnnlab.models.registry import register


@register("ann")
def ann(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(32 * 32 * 3, 1024), nn.ReLU(),
        nn.Linear(1024, 256), nn.ReLU(),
        nn.Linear(256, num_classes),
    )


@register("cnn")
def cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 512), nn.ReLU(),
        nn.Linear(512, num_classes),
    )
