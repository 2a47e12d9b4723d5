"""Models are registered by name, so params.yaml picks one and tests can loop over all of them.

Most models train from scratch and their factory takes only `num_classes`. Models that can start
from pretrained weights register with `pretrained=True`; their factory also receives `weights`
("none", "imagenet" or a local file path), which it interprets itself.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cnnlab.errors import CnnlabError

ModelFactory = Callable[..., nn.Module]  # (num_classes[, weights]) -> a fresh model

MODELS: dict[str, ModelFactory] = {}
PRETRAINED: set[str] = set()  # names whose factory accepts `weights`

NO_WEIGHTS = "none"  # the default: random initialisation, accepted by every model


def register(name: str, pretrained: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = factory
        if pretrained:
            PRETRAINED.add(name)
        return factory

    return decorator


def _check_known(name: str) -> None:
    if name not in MODELS:
        raise CnnlabError(f"unknown model {name!r} (choose from: {', '.join(sorted(MODELS))})")


def accepts_weights(name: str) -> bool:
    """Whether `name` can load weights other than "none" (raises CnnlabError if unknown)."""
    _check_known(name)
    return name in PRETRAINED


def build_model(name: str, num_classes: int, weights: str = NO_WEIGHTS) -> nn.Module:
    _check_known(name)
    if name in PRETRAINED:
        return MODELS[name](num_classes, weights=weights)
    if weights != NO_WEIGHTS:
        # Silently ignoring the setting would train from scratch while the user thinks otherwise.
        raise CnnlabError(
            f"model {name!r} trains from scratch and takes no weights (got weights {weights!r}); "
            f"models that accept weights: {', '.join(sorted(PRETRAINED)) or 'none'}"
        )
    return MODELS[name](num_classes)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
