"""Models are registered by name, so params.yaml picks one and tests can loop over all of them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cnnlab.errors import CnnlabError

ModelFactory = Callable[[int], nn.Module]  # num_classes -> a freshly initialised model

MODELS: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = factory
        return factory

    return decorator


def build_model(name: str, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise CnnlabError(f"unknown model {name!r} (choose from: {', '.join(sorted(MODELS))})")
    return MODELS[name](num_classes)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
