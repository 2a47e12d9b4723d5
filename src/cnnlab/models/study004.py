"""Study 004's dropout CNN for 32x32 RGB input (CIFAR-10, recipe E), a port of its Keras model."""

from collections import OrderedDict

from torch import nn

from cnnlab.models.registry import register


@register("dropcnn")
def dropcnn(num_classes: int) -> nn.Module:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 32, 3), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2), drop1=nn.Dropout(0.2),
        conv2=nn.Conv2d(32, 64, 3), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2), drop2=nn.Dropout(0.3),
        flatten=nn.Flatten(),  # 64 x 6 x 6 = 2304
        fc1=nn.Linear(2304, 128), relu3=nn.ReLU(), drop3=nn.Dropout(0.4),
        fc2=nn.Linear(128, num_classes),
    ))
