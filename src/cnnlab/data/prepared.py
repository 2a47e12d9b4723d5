"""The prepared-dataset format every training stage reads.

A prepared dataset is a directory holding, per split, one uint8 image array (N, H, W, 3) and one
int64 label array (N,) as .npy files, plus meta.json with the class names, split sizes and source.
Loading is a plain np.load: no per-image files and no decoding at train time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.atomic import atomic_dir
from cnnlab.errors import CnnlabError

META_FILE = "meta.json"


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8, RGB
    labels: np.ndarray  # (N,) int64, indices into PreparedDataset.classes

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise CnnlabError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} "
                              f"{self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise CnnlabError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class PreparedDataset:
    name: str
    classes: tuple[str, ...]
    splits: dict[str, Split]
    source: dict = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise CnnlabError(f"dataset {self.name!r} has no split {name!r} "
                              f"(it has: {', '.join(self.splits)})")
        return self.splits[name]


def save_prepared(dataset: PreparedDataset, out_dir: str | Path) -> None:
    """Write `dataset` to `out_dir` atomically: the directory appears complete or not at all."""
    for split_name, split in dataset.splits.items():
        bad = (split.labels < 0) | (split.labels >= len(dataset.classes))
        if bad.any():
            last = len(dataset.classes) - 1
            raise CnnlabError(f"split {split_name!r} has labels outside 0..{last}")
    meta = {
        "name": dataset.name,
        "classes": list(dataset.classes),
        "image_size": list(next(iter(dataset.splits.values())).images.shape[1:3]),
        "splits": {name: len(split) for name, split in dataset.splits.items()},
        "class_counts": {
            name: np.bincount(split.labels, minlength=len(dataset.classes)).tolist()
            for name, split in dataset.splits.items()
        },
        "source": dataset.source,
    }
    with atomic_dir(out_dir) as tmp:
        for split_name, split in dataset.splits.items():
            np.save(tmp / f"{split_name}_images.npy", np.ascontiguousarray(split.images))
            np.save(tmp / f"{split_name}_labels.npy", split.labels.astype(np.int64))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_prepared(path: str | Path) -> PreparedDataset:
    """Read a prepared dataset; a missing or incomplete directory is a one-line error."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise CnnlabError(f"prepared dataset not found at {path} (run its prepare stage first, "
                          f"e.g. `dvc repro`)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    splits = {}
    for split_name, size in meta["splits"].items():
        try:
            images = np.load(path / f"{split_name}_images.npy", allow_pickle=False)
            labels = np.load(path / f"{split_name}_labels.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CnnlabError(f"prepared dataset {path} is damaged ({split_name}): {exc}") from exc
        if len(labels) != size:
            raise CnnlabError(f"prepared dataset {path}: {split_name} has {len(labels)} labels, "
                              f"meta.json says {size}")
        splits[split_name] = Split(images, labels)
    return PreparedDataset(meta["name"], tuple(meta["classes"]), splits, meta.get("source", {}))
