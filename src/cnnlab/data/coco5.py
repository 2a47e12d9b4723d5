"""Choose the images of the COCO 5-class dataset (study 002) from a COCO annotation file.

Pure selection: no network and no pixels, so it is quick to test and the same on every machine.

* Candidates of a class are the images holding at least one instance of it (crowd instances
  included: they still show the class). With `exclusive`, only images holding exactly one of the
  target classes stay: the study's own fix for images that could carry two labels.
* Each class's candidates are sorted by image id and then shuffled by one
  `np.random.default_rng(seed)`, drawn from class by class in label order, so the order depends on
  the seed alone, never on dict or set ordering.
* Classes take images round-robin, each its next candidate that no class has taken yet, until each
  has train_per_class + val_per_class. Taking turns keeps a frequent class from eating the images a
  rare class shares with it. No image is taken twice, across classes or splits.
* Within a class the first train_per_class picks are "train", the rest "val". When a class runs
  short (and allow_shortfall is set) it keeps what there is with train filled first, so the val
  split is the one that comes up short.
* The candidates left over stay in order as `spares`: the build replaces an image that cannot be
  fetched or decoded by the next spare of its class that no class has used.

`selection: study` replaces the shuffle and the turns with study 002's own loop: each class's
candidates in the order pycocotools' `getImgIds(catIds=[id])` returns them (the order of a Python
set of ints), walked class after class in label order, first every class's train images, then
every class's val images, each walk starting from the front and skipping the images already taken.
An image holding two classes goes to whichever walk reaches it first. The study's loop crashed
when a class ran out of images; here that is a shortfall like any other. The study also skipped
files missing from its disk in the walk itself; here an unusable image is replaced by its class's
next spare, so the selection is the study's exactly when every image can be used.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from cnnlab.config import Coco5Config
from cnnlab.errors import CnnlabError

SPLITS = ("train", "val")


@dataclass(frozen=True)
class Coco5Selection:
    """Which image ids each class gets, in label order, plus the spares for replacements."""

    classes: tuple[str, ...]
    category_ids: tuple[int, ...]
    train_per_class: int
    val_per_class: int
    picked: tuple[tuple[int, ...], ...]  # per class; the first train_per_class are train
    spares: tuple[tuple[int, ...], ...]  # per class, in order; none is in `picked` of any class
    eligible: tuple[int, ...]  # candidates per class (after the exclusive filter)

    @property
    def asked(self) -> int:
        return self.train_per_class + self.val_per_class

    @property
    def shortfalls(self) -> dict[str, int]:
        """Class name -> how many images it lacks, for the classes that lack any."""
        pairs = zip(self.classes, self.picked, strict=True)
        return {name: self.asked - len(ids) for name, ids in pairs if len(ids) < self.asked}

    def split_of(self, position: int) -> str:
        """The split of a class's `position`-th image (train first)."""
        return SPLITS[0] if position < self.train_per_class else SPLITS[1]

    def assignments(self) -> list[tuple[int, int, str]]:
        """(image_id, label, split) for every picked image, by class then position."""
        return [(image_id, label, self.split_of(pos))
                for label, ids in enumerate(self.picked) for pos, image_id in enumerate(ids)]


def load_annotations(path: str | os.PathLike) -> COCO:
    """Read a COCO instances json into an indexed pycocotools COCO, or fail in one line."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CnnlabError(f"COCO annotation file {path} is not valid JSON: {exc}") from exc
    return index_annotations(dataset, str(path))


def index_annotations(dataset: object, label: str = "annotations") -> COCO:
    """Index an already parsed COCO json with pycocotools, checking the parts selection uses."""
    if not isinstance(dataset, dict):
        raise CnnlabError(f"{label}: expected a JSON object, got {type(dataset).__name__}")
    missing = [key for key in ("images", "annotations", "categories") if key not in dataset]
    if missing:
        raise CnnlabError(f"{label}: not a COCO instances file (no {', '.join(missing)})")
    coco = COCO()
    coco.dataset = dataset
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise CnnlabError(f"{label}: malformed COCO record (missing or bad {exc})") from exc
    return coco


def select_images(coco: COCO, cfg: Coco5Config, label: str = "the annotations") -> Coco5Selection:
    """Apply the selection rules of the module docstring to an indexed COCO."""
    cat_ids, per_class = _eligible(coco, cfg, label)
    asked = cfg.train_per_class + cfg.val_per_class
    if cfg.selection == "study":
        candidates = [_pycocotools_order(coco, cat_id, ids)
                      for cat_id, ids in zip(cat_ids, per_class, strict=True)]
        picked, used = _class_after_class(candidates, (cfg.train_per_class, cfg.val_per_class))
    else:
        rng = np.random.default_rng(cfg.seed)
        candidates = [ids[rng.permutation(len(ids))].tolist() for ids in per_class]
        picked, used = _round_robin(candidates, asked)

    eligible = tuple(len(c) for c in candidates)
    for name, ids, n in zip(cfg.classes, picked, eligible, strict=True):
        if len(ids) < asked and not cfg.allow_shortfall:
            taken = n - len(ids)
            shared = f" ({taken} of them taken by other classes)" if taken else ""
            kind = "eligible images (holding no other of the classes)" if cfg.exclusive \
                else "eligible images"
            raise CnnlabError(
                f"class {name!r}: {n} {kind}{shared}, {asked} asked (train "
                f"{cfg.train_per_class} + val {cfg.val_per_class}); set "
                f"data.coco5.allow_shortfall: true to take what there is")
    spares = tuple(tuple(i for i in cands if i not in used) for cands in candidates)
    return Coco5Selection(
        classes=tuple(cfg.classes),
        category_ids=tuple(cat_ids),
        train_per_class=cfg.train_per_class,
        val_per_class=cfg.val_per_class,
        picked=tuple(tuple(ids) for ids in picked),
        spares=spares,
        eligible=eligible,
    )


def _eligible(coco: COCO, cfg: Coco5Config, label: str) -> tuple[list[int], list[np.ndarray]]:
    """Each class's category id and its candidate image ids (sorted; exclusive applied)."""
    by_name: dict[str, int] = {}
    for cat in coco.cats.values():
        by_name.setdefault(cat["name"], cat["id"])
    unknown = [name for name in cfg.classes if name not in by_name]
    if unknown:
        raise CnnlabError(f"class {unknown[0]!r} is not a category in {label}; available: "
                          f"{', '.join(sorted(by_name))}")
    cat_ids = [by_name[name] for name in cfg.classes]

    known = np.fromiter(coco.imgs.keys(), dtype=np.int64, count=len(coco.imgs))
    per_class = []
    for cat_id in cat_ids:
        ids = np.unique(np.asarray(coco.catToImgs.get(cat_id, []), dtype=np.int64))
        per_class.append(ids[np.isin(ids, known, assume_unique=True)])  # an image record exists
    if cfg.exclusive:
        ids, counts = np.unique(np.concatenate(per_class), return_counts=True)
        single = ids[counts == 1]
        per_class = [ids_c[np.isin(ids_c, single, assume_unique=True)] for ids_c in per_class]
    return cat_ids, per_class


def _pycocotools_order(coco: COCO, cat_id: int, eligible: np.ndarray) -> list[int]:
    """The `eligible` ids in the order pycocotools' getImgIds lists the category's images."""
    keep = set(eligible.tolist())
    return [image_id for image_id in coco.getImgIds(catIds=[cat_id]) if image_id in keep]


def _class_after_class(candidates: list[list[int]], quotas: tuple[int, ...]
                       ) -> tuple[list[list[int]], set[int]]:
    """Study 002's loop: for each quota (train, then val), each class in turn walks its
    candidates from the front, taking those no walk has taken yet, until it has the quota."""
    used: set[int] = set()
    picked: list[list[int]] = [[] for _ in candidates]
    for quota in quotas:
        for c, cands in enumerate(candidates):
            added = 0
            for image_id in cands:
                if added == quota:
                    break
                if image_id not in used:
                    used.add(image_id)
                    picked[c].append(image_id)
                    added += 1
    return picked, used


def _round_robin(candidates: list[list[int]], asked: int) -> tuple[list[list[int]], set[int]]:
    """Classes take turns, each its next candidate not used yet, until full or out of them."""
    used: set[int] = set()
    picked: list[list[int]] = [[] for _ in candidates]
    pointer = [0] * len(candidates)
    active = [c for c in range(len(candidates)) if asked > 0]
    while active:
        still = []
        for c in active:
            cands, p = candidates[c], pointer[c]
            while p < len(cands) and cands[p] in used:
                p += 1
            if p < len(cands):
                used.add(cands[p])
                picked[c].append(cands[p])
                p += 1
                if len(picked[c]) < asked:
                    still.append(c)
            pointer[c] = p
        active = still
    return picked, used
