"""Which images an experiment trains and is scored on, drawn from its prepared dataset.

Every choice here uses the experiment's data_seed, never its training seed, so a sweep over seeds
trains on the same images. Order of operations: hold out `val_fraction` of train as "val"
(scikit-learn's train_test_split, as study 004 did with random_state=42), then keep a seeded
`train_fraction` of what is left (capped at `train_subset` images), and a seeded `eval_fraction`
of the eval split (capped at `eval_subset`). The hold-out is taken first, so no subset can
overlap it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.config import Experiment
from cnnlab.data.loader import seeded_subset
from cnnlab.data.prepared import PreparedDataset, Split
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class ExperimentData:
    name: str  # the dataset's name
    classes: tuple[str, ...]
    splits: dict[str, Split]

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise CnnlabError(f"dataset {self.name!r} has no split {name!r} (it has: "
                              f"{', '.join(self.splits)}; a val split of train needs "
                              f"val_fraction > 0)")
        return self.splits[name]


def select_data(exp: Experiment, dataset: PreparedDataset) -> ExperimentData:
    splits = dict(dataset.splits)
    train = dataset.split("train")
    if exp.val_fraction > 0:
        if "val" in splits:
            raise CnnlabError(f"dataset {dataset.name!r} already has a val split; set "
                              f"val_fraction: 0 to use it")
        train_idx, val_idx = holdout_indices(len(train), exp.val_fraction, exp.data_seed)
        train, splits["val"] = take(train, train_idx), take(train, val_idx)
    keep = fraction_count(len(train), exp.train_fraction)
    if exp.train_subset is not None:
        keep = min(keep, exp.train_subset)
    splits["train"] = take(train, seeded_subset(len(train), keep, exp.data_seed))
    if exp.eval_fraction < 1 or exp.eval_subset is not None:
        scored = splits[exp.eval_split] if exp.eval_split in splits else dataset.split(
            exp.eval_split)  # the error names the splits there are
        keep = fraction_count(len(scored), exp.eval_fraction)
        if exp.eval_subset is not None:
            keep = min(keep, exp.eval_subset)
        # A stream of its own, so the eval subset does not depend on the train settings.
        splits[exp.eval_split] = take(scored, seeded_subset(len(scored), keep,
                                                            [exp.data_seed, 1]))
    return ExperimentData(dataset.name, dataset.classes, splits)


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: sklearn's shuffled split, as Keras users make it."""
    # Imported here: scikit-learn takes a second to import, and only hold-outs need it.
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(np.arange(n), test_size=fraction, random_state=seed)
    return train_idx, val_idx


def fraction_count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def take(split: Split, indices: np.ndarray | None) -> Split:
    return split if indices is None else Split(split.images[indices], split.labels[indices])
