"""The names params.yaml may use, as plain data, so loading params imports no torch.

The model registry (cnnlab.models) and torch.optim are the real things; tests/test_catalog.py
checks that this table names exactly the registered models and torch's own defaults, so the two
cannot drift apart.
"""

from __future__ import annotations

from typing import Any

# Each registered model -> whether it can start from pretrained weights (`weights:` other than
# none). Add a line here when registering a model in cnnlab.models.
MODELS: dict[str, bool] = {
    "ann": False,
    "cnn": False,
    "hw4net1": False,
    "hw4net2": False,
    "hw4net3": False,
    "hw4net3_shared": False,
    "deepcnn": False,
    "dropcnn": False,
    "vgg16_tl": True,
    "resnet18_tl": True,
}

# The OptimizerConfig fields; each optimizer takes the ones its torch constructor names.
HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "momentum", "nesterov", "alpha")

# Where the values a user leaves out come from. `torch`: torch.optim's own signature defaults.
# `keras`: keras.optimizers.{Adam, AdamW, SGD, RMSprop} defaults (Keras 3 docs; rho is torch's
# alpha); study 004 trained with Adam, SGD and RMSprop. This preset also builds Keras' own update
# rule for adam and rmsprop (cnnlab.train.optimizers.KERAS_OPTIMIZERS), not only its defaults.
OPTIMIZER_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "torch": {
        "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
        "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
        "sgd": {"lr": 1e-3, "weight_decay": 0.0, "momentum": 0.0, "nesterov": False},
        "rmsprop": {"lr": 1e-2, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                    "alpha": 0.99},
    },
    "keras": {
        "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.0},
        "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.004},
        "sgd": {"lr": 0.01, "weight_decay": 0.0, "momentum": 0.0, "nesterov": False},
        "rmsprop": {"lr": 1e-3, "eps": 1e-7, "weight_decay": 0.0, "momentum": 0.0,
                    "alpha": 0.9},
    },
}
OPTIMIZERS = tuple(OPTIMIZER_DEFAULTS["torch"])


def accepted(optimizer: str) -> tuple[str, ...]:
    """The hyperparameters `optimizer` takes, in HYPERPARAMETERS order."""
    takes = OPTIMIZER_DEFAULTS["torch"][optimizer]
    return tuple(key for key in HYPERPARAMETERS if key in takes)


def optimizer_settings(name: str, preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of optimizer `name`: those `given` (not None), the rest from
    `preset`, in HYPERPARAMETERS order."""
    defaults = OPTIMIZER_DEFAULTS[preset][name]
    return {key: defaults[key] if given.get(key) is None else given[key]
            for key in accepted(name)}
