"""Study 003's deep CNN for 32x32 RGB input (CIFAR-10, recipe D): six conv blocks with batch
norm."""

from collections import OrderedDict

from torch import nn

from cnnlab.models.registry import register

# (in, out, kernel, Dropout2d p or None, AvgPool2 after the block)
_BLOCKS = (
    (3, 64, 5, None, False),
    (64, 119, 5, 0.04, True),
    (119, 221, 3, 0.05, False),
    (221, 256, 5, 0.02, True),
    (256, 256, 3, 0.09, False),
    (256, 256, 5, 0.08, False),
)


@register("deepcnn")
def deepcnn(num_classes: int) -> nn.Module:
    layers = OrderedDict()
    for i, (c_in, c_out, k, drop, pool) in enumerate(_BLOCKS, start=1):
        # No conv bias anywhere: the batch norm right after it has its own shift.
        layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
        layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
        layers[f"relu{i}"] = nn.ReLU()
        if drop is not None:
            layers[f"drop{i}"] = nn.Dropout2d(drop)
        if pool:
            layers[f"pool{i}"] = nn.AvgPool2d(2)
    layers.update(gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), drop=nn.Dropout(0.38),
                  fc=nn.Linear(256, num_classes))
    return nn.Sequential(layers)
