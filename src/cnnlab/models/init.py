"""Weight initialisation schemes a params file can ask for, beside torch's layer defaults."""

from __future__ import annotations

from torch import nn


def glorot_uniform_(model: nn.Module) -> nn.Module:
    """Keras' default: Glorot-uniform weights and zero biases for every conv and linear layer.
    torch's fan-in/fan-out of a conv kernel (channels x kernel area) is Keras' too."""
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


INITIALISERS = {"default": lambda model: model, "glorot_uniform": glorot_uniform_}
