"""COCO data for the coco5 tests and benchmark: the real mini subset, and generated annotations.

    from coco_fixtures import extract_mini, generate_coco, write_json, image_files

`generate_coco(n)` makes a valid COCO instances dict (images with id/file_name/coco_url/height/
width, annotations with id/image_id/category_id/bbox/area/iscrowd, the 80 real categories with
their real ids) whose five target classes appear at roughly COCO train2017's rates and overlap the
way they do there (dogs on couches, cakes near both), among other categories. `image_files` draws a
distinct JPEG for each image record, of the size the record states.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
from conftest import real_archive

TARGETS = ("boat", "couch", "dog", "cake", "motorcycle")

# The 80 COCO categories with their official (gapped) ids and supercategories.
CATEGORIES = [
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"), (5, "airplane", "vehicle"), (6, "bus", "vehicle"),
    (7, "train", "vehicle"), (8, "truck", "vehicle"), (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"), (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"),
    (49, "knife", "kitchen"), (50, "spoon", "kitchen"), (51, "bowl", "kitchen"),
    (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"),
    (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"),
    (85, "clock", "indoor"), (86, "vase", "indoor"), (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
]
CAT_ID = {name: cid for cid, name, _ in CATEGORIES}

# Share of train2017 images holding each class (boat 3,025, couch 4,423, dog 4,385, cake 3,049,
# motorcycle 3,502 of 118,287), and extra co-occurrence: P(second | first) added on top.
RATES = {"boat": 0.026, "couch": 0.037, "dog": 0.037, "cake": 0.026, "motorcycle": 0.030}
PAIRS = [("dog", "couch", 0.15), ("couch", "dog", 0.12), ("cake", "couch", 0.05),
         ("dog", "cake", 0.02), ("couch", "cake", 0.03), ("boat", "dog", 0.03)]
PHOTO_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (640, 360)]


def extract_mini(dest: Path) -> Path:
    """Extract the real coco-mini archive under `dest`; return the folder holding annotations/."""
    archive = real_archive("coco-mini.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    found = sorted(p.parent for p in dest.rglob("annotations") if p.is_dir())
    assert found, f"{archive} has no annotations/ folder"
    return found[0]


def mini_ann(mini: Path) -> Path:
    """The mini subset's train2017 annotations file."""
    return mini / "annotations" / "instances_train2017.json"


def generate_coco(
    n_images: int,
    *,
    seed: int = 0,
    split: str = "train2017",
    rates: dict[str, float] | None = None,
    pairs: list[tuple[str, str, float]] | None = None,
    sizes: list[tuple[int, int]] | None = None,
    other_mean: float = 2.0,
) -> dict:
    """A valid COCO instances dict of `n_images` images (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rates = RATES if rates is None else rates
    pairs = PAIRS if pairs is None else pairs
    sizes = PHOTO_SIZES if sizes is None else sizes
    ids = np.sort(rng.choice(np.arange(1, 600_000), size=n_images, replace=False))

    has = {name: rng.random(n_images) < rate for name, rate in rates.items()}
    for first, second, p in pairs:
        if first in has and second in has:
            has[second] |= has[first] & (rng.random(n_images) < p)
    others = [cid for cid, name, _ in CATEGORIES if name not in rates]
    n_other = rng.poisson(other_mean, n_images)
    size_idx = rng.integers(0, len(sizes), n_images)

    # One row per (image, category) present, then one or two instances per row: all in numpy.
    rows_img, rows_cat = [], []
    for name in rates:
        hit = np.flatnonzero(has[name])
        rows_img.append(hit)
        rows_cat.append(np.full(len(hit), CAT_ID[name]))
    other_img = np.repeat(np.arange(n_images), n_other)
    rows_img.append(other_img)
    rows_cat.append(np.asarray(others)[rng.integers(0, len(others), len(other_img))])
    row_img, row_cat = np.concatenate(rows_img), np.concatenate(rows_cat)
    repeat = 1 + (rng.random(len(row_img)) < 0.3)  # sometimes two instances
    ann_img, ann_cat = np.repeat(row_img, repeat), np.repeat(row_cat, repeat)
    order = np.argsort(ann_img, kind="stable")
    ann_img, ann_cat = ann_img[order], ann_cat[order]
    sizes_arr = np.asarray(sizes)[size_idx]  # (n, 2): width, height
    img_w, img_h = sizes_arr[ann_img, 0], sizes_arr[ann_img, 1]
    box_w = (rng.random(len(ann_img)) * (img_w // 2 - 8) + 8).astype(int)
    box_h = (rng.random(len(ann_img)) * (img_h // 2 - 8) + 8).astype(int)
    box_x = (rng.random(len(ann_img)) * (img_w - box_w)).astype(int)
    box_y = (rng.random(len(ann_img)) * (img_h - box_h)).astype(int)
    crowd = (rng.random(len(ann_img)) < 0.01).astype(int)

    id_list = ids.tolist()
    images = []
    for image_id, (width, height) in zip(id_list, sizes_arr.tolist(), strict=True):
        name = f"{image_id:012d}.jpg"
        images.append({"license": 1, "file_name": name,
                       "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                       "height": height, "width": width, "id": image_id})
    annotations = [
        {"id": k + 1, "image_id": id_list[i], "category_id": c, "bbox": [x, y, w, h],
         "area": float(w * h), "iscrowd": z}
        for k, (i, c, x, y, w, h, z) in enumerate(zip(
            ann_img.tolist(), ann_cat.tolist(), box_x.tolist(), box_y.tolist(),
            box_w.tolist(), box_h.tolist(), crowd.tolist(), strict=True))
    ]
    return {
        "info": {"description": "generated by tests/coco_fixtures.py", "version": "1.0"},
        "licenses": [{"id": 1, "name": "generated", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": sup}
                       for cid, name, sup in CATEGORIES],
    }


def write_json(path: Path, dataset: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dataset, f, separators=(",", ":"))
    return path


def jpeg_bytes(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A distinct photo-like JPEG: a smooth colour field plus some noise, so it is not tiny."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(0.005, 0.05, 3)
    phase = rng.uniform(0, 6.28, 3)
    planes = [np.sin(a * x + b * y + phase[k]) * np.cos(c * (x - y) + k) for k in range(3)]
    image = (np.stack(planes, axis=2) * 100 + 128 + rng.normal(0, 12, (height, width, 3)))
    ok, data = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def image_files(dataset: dict, split: str = "train2017",
                only: set[int] | None = None) -> dict[str, bytes]:
    """`<split>/<file_name>` -> JPEG bytes for each image record (or those whose id is in only)."""
    return {f"{split}/{img['file_name']}": jpeg_bytes(img["width"], img["height"], img["id"])
            for img in dataset["images"] if only is None or img["id"] in only}


def target_image_ids(dataset: dict, classes: tuple[str, ...] = TARGETS) -> set[int]:
    """Ids of the images holding at least one of `classes` (the only ones a build can fetch)."""
    wanted = {CAT_ID[c] for c in classes}
    return {a["image_id"] for a in dataset["annotations"] if a["category_id"] in wanted}
