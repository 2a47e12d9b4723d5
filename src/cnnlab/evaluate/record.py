"""metrics/<exp>.json, the one record of an evaluated experiment: numbers only.

`dvc metrics show`, `dvc metrics diff` and `dvc exp show` read this file, so it holds results and
nothing else: no strings, no settings params.yaml already holds, no timings. With the same params
the CPU gives the same numbers, and the same numbers give the same bytes, so two identical runs
have an empty `dvc metrics diff`. What a result was produced with (git revision, versions, device)
is written beside it by cnnlab.evaluate.provenance, in a file DVC does not read as metrics.

The evaluate stage builds a MetricsRecord and writes it; the report, the study-002 comparison and
the seed summary read it back through MetricsRecord.read / MetricsRecord.from_json. Nothing else
builds or reads the file by its keys.

The file, in this key order (nested keys sorted, so equal records give equal bytes):

    accuracy, precision_macro, recall_macro, f1_macro  the eval split's, fractions in [0, 1]
    <split>_accuracy                   each also_evaluate split's accuracy, e.g. train_accuracy
    augmented_accuracy                 score_augmented only: the eval split through the training
                                       augmentation (study 001's protocol)
    per_class                          {class name: accuracy (recall)}
    params, trainable_params, epochs, train_images, eval_images, seed          whole numbers
    best                               keep_best only: {epoch, accuracy, f1_macro,
                                       <split>_accuracy} of the epoch best on the eval split
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.atomic import write_text
from cnnlab.errors import CnnlabError

SCORES = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
COUNTS = ("params", "trainable_params", "epochs", "train_images", "eval_images", "seed")
BEST_SCORES = ("accuracy", "f1_macro")
# also_evaluate splits appear as "<split>_accuracy" keys beside the eval split's "accuracy".
_SPLIT_KEY = re.compile(r"([a-z0-9]+)_accuracy")


class InvalidRecord(CnnlabError):
    """What is wrong with a metrics record, in a few words (the caller names the file)."""


def _fraction(value: object, where: str) -> float:
    """A score in [0, 1]; an int (0 or 1) counts, a bool or a string does not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"{where} is {value!r}, not a number")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise InvalidRecord(f"{where} is {value!r}, not a fraction in [0, 1]")
    return float(value)


def _count(value: object, where: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{where} is {value!r}, not a whole number")
    if value < least:
        raise InvalidRecord(f"{where} is {value}, below {least}")
    return value


def _fractions(values: object, where: str) -> dict[str, float]:
    """{name: fraction}, sorted by name so equal mappings write equal bytes."""
    if not isinstance(values, Mapping):
        raise InvalidRecord(f"{where} is {values!r}, not an object of numbers")
    for name in values:
        if not isinstance(name, str) or not name:
            raise InvalidRecord(f"{where} has a key {name!r}, not a name")
    return {name: _fraction(values[name], f"{where}.{name}") for name in sorted(values)}


def _split_accuracy(values: object, where: str) -> dict[str, float]:
    scores = _fractions(values, where)
    bad = [split for split in scores if not re.fullmatch(r"[a-z0-9]+", split)]
    if bad:
        raise InvalidRecord(f"{where} names a split {bad[0]!r} (use a-z and 0-9)")
    return scores


def _split_keys(split_accuracy: Mapping[str, float]) -> dict[str, float]:
    return {f"{split}_accuracy": value for split, value in split_accuracy.items()}


def _split_entries(data: Mapping[str, object], known: tuple[str, ...], where: str
                   ) -> dict[str, object]:
    """The "<split>_accuracy" entries of `data`, by split; any other unknown key is an error."""
    splits = {}
    for key, value in data.items():
        if key in known:
            continue
        match = _SPLIT_KEY.fullmatch(key) if isinstance(key, str) else None
        if match is None:
            raise InvalidRecord(f"{where}{key} is not a metric of this record")
        splits[match[1]] = value
    return splits


def _present(data: object, keys: tuple[str, ...], where: str) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise InvalidRecord(f"{where.rstrip('.') or 'the file'} is not a JSON object")
    absent = [where + key for key in keys if key not in data]
    if absent:
        raise InvalidRecord(f"lacks {', '.join(absent)}")
    return data


@dataclass(frozen=True)
class BestEpoch:
    """keep_best: the epoch best on the eval split, scored again from its own checkpoint."""

    epoch: int  # 1-based
    accuracy: float
    f1_macro: float
    split_accuracy: Mapping[str, float] = field(default_factory=dict)  # also_evaluate splits

    def __post_init__(self) -> None:
        object.__setattr__(self, "epoch", _count(self.epoch, "best.epoch", least=1))
        for name in BEST_SCORES:
            object.__setattr__(self, name, _fraction(getattr(self, name), f"best.{name}"))
        object.__setattr__(self, "split_accuracy",
                           _split_accuracy(self.split_accuracy, "best split accuracy"))

    def to_json(self) -> dict[str, object]:
        return {"epoch": self.epoch, **{name: getattr(self, name) for name in BEST_SCORES},
                **_split_keys(self.split_accuracy)}

    @classmethod
    def from_json(cls, data: object) -> BestEpoch:
        data = _present(data, ("epoch", *BEST_SCORES), "best.")
        splits = _split_entries(data, ("epoch", *BEST_SCORES), "best.")
        return cls(data["epoch"], data["accuracy"], data["f1_macro"], splits)


@dataclass(frozen=True)
class MetricsRecord:
    """The results of evaluate@<exp>; every value is a number (or an object of numbers)."""

    accuracy: float  # on the eval split
    precision_macro: float
    recall_macro: float
    f1_macro: float
    per_class: Mapping[str, float]  # accuracy (recall) by class name
    params: int
    trainable_params: int
    epochs: int  # trained
    train_images: int
    eval_images: int
    seed: int  # the run's seed: tells the seed summary a fresh file from another run's
    split_accuracy: Mapping[str, float] = field(default_factory=dict)  # also_evaluate, by split
    best: BestEpoch | None = None  # keep_best experiments only
    # score_augmented only: eval_split scored through the training augmentation (study 001)
    augmented_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in SCORES:
            object.__setattr__(self, name, _fraction(getattr(self, name), name))
        for name in COUNTS:
            object.__setattr__(self, name, _count(getattr(self, name), name))
        per_class = _fractions(self.per_class, "per_class")
        if not per_class:
            raise InvalidRecord("per_class names no class")
        object.__setattr__(self, "per_class", per_class)
        object.__setattr__(self, "split_accuracy",
                           _split_accuracy(self.split_accuracy, "split accuracy"))
        if self.augmented_accuracy is not None:
            object.__setattr__(self, "augmented_accuracy",
                               _fraction(self.augmented_accuracy, "augmented_accuracy"))
        if self.best is not None and not isinstance(self.best, BestEpoch):
            raise InvalidRecord(f"best is {self.best!r}, not a best epoch")
        if self.best is not None:
            self._check_best(self.best)

    def _check_best(self, best: BestEpoch) -> None:
        if best.epoch > self.epochs:
            raise InvalidRecord(f"best.epoch {best.epoch} is after the last epoch {self.epochs}")
        if set(best.split_accuracy) != set(self.split_accuracy):
            raise InvalidRecord(f"best scores the splits {sorted(best.split_accuracy)}, the "
                                f"last epoch {sorted(self.split_accuracy)}")

    def to_json(self) -> dict[str, object]:
        """The file's content: numbers only, in the documented key order."""
        out: dict[str, object] = {name: getattr(self, name) for name in SCORES}
        out.update(_split_keys(self.split_accuracy))
        if self.augmented_accuracy is not None:
            out["augmented_accuracy"] = self.augmented_accuracy
        out["per_class"] = dict(self.per_class)
        out.update({name: getattr(self, name) for name in COUNTS})
        if self.best is not None:
            out["best"] = self.best.to_json()
        return out

    @classmethod
    def from_json(cls, data: object) -> MetricsRecord:
        """The record a file's parsed JSON holds; InvalidRecord says what is wrong with it."""
        known = (*SCORES, "per_class", *COUNTS, "best", "augmented_accuracy")
        data = _present(data, (*SCORES, "per_class", *COUNTS), "")
        splits = _split_entries(data, known, "")
        best = BestEpoch.from_json(data["best"]) if "best" in data else None
        scalars = {name: data[name] for name in (*SCORES, *COUNTS)}
        return cls(**scalars, per_class=data["per_class"], split_accuracy=splits, best=best,
                   augmented_accuracy=data.get("augmented_accuracy"))

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, path: str | Path) -> None:
        """Written atomically: a crash leaves the previous file or none, never half of one."""
        write_text(path, self.text())

    @classmethod
    def read(cls, path: str | Path, experiment: str) -> MetricsRecord:
        """The record in `path`, or one line naming the file and the stage that writes it."""
        path, stage = Path(path), f"evaluate@{experiment}"
        data = read_stage_json(path, stage)
        try:
            return cls.from_json(data)
        except InvalidRecord as exc:
            raise CnnlabError(f"{path}: {exc}; re-run `dvc repro -f {stage}`") from exc


def read_stage_json(path: Path, stage: str) -> object:
    """A stage's JSON output, parsed; a missing or broken file is one line naming the file and
    the stage that writes it."""
    if not path.is_file():
        raise CnnlabError(f"{path} not found (run `dvc repro {stage}` first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path} is not valid JSON ({exc}); re-run "
                          f"`dvc repro -f {stage}`") from exc
