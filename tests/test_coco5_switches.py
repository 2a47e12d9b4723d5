"""Study 002's COCO build switches in data.coco5: interpolation, jpeg_quality and selection.

Each is compared with an independent reference: OpenCV's own resize calls and NumPy's block
means for the filters; PIL saving a .jpg file and reading it back, as the study did, for the JPEG
round trip; and, for the selection, the study's loop transcribed from its code (a `while` over an
index `k` into pycocotools' getImgIds list, a `used_ids` list) on the real COCO mini subset and on
hand-made annotations. The build then runs with all three on the mini subset and its arrays are
checked against the study's pipeline written out step by step.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from coco_fixtures import CAT_ID, TARGETS, jpeg_bytes, mini_ann
from PIL import Image

from cnnlab.config import Coco5Config, DownloadSource, parse_params
from cnnlab.data.coco5 import index_annotations, load_annotations, select_images
from cnnlab.data.coco_build import build_coco5, jpeg_round_trip, resize_image
from cnnlab.data.prepared import load_prepared
from cnnlab.errors import CnnlabError
from cnnlab.schema import ParamsError

ROOT = Path(__file__).resolve().parents[1]
BASE = Coco5Config(annotations=DownloadSource(url="unused", md5=None), classes=TARGETS,
                   train_per_class=1, val_per_class=1, workers=2, retries=0)


def photo(width: int = 640, height: int = 480, seed: int = 1) -> np.ndarray:
    """A photo-like RGB image (smooth colour plus noise, decoded from a JPEG)."""
    bgr = cv2.imdecode(np.frombuffer(jpeg_bytes(width, height, seed), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------- interpolation


def test_linear_is_cv2_resize_default_and_area_is_inter_area():
    rgb = photo()
    # The study called cv2.resize(image, (64, 64)) with no interpolation: INTER_LINEAR.
    np.testing.assert_array_equal(resize_image(rgb, 64, "linear"), cv2.resize(rgb, (64, 64)))
    np.testing.assert_array_equal(resize_image(rgb, 64, "linear"),
                                  cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(resize_image(rgb, 64, "area"),
                                  cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(resize_image(rgb, 64, "area"), resize_image(rgb, 64, "linear"))


def test_filters_against_numpy_at_a_whole_ratio():
    """640 -> 64: area is the mean of each 10x10 block; linear reads only the 2x2 pixels at each
    block's centre (source x = 10 i + 4.5), which is why it aliases."""
    rgb = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    src = rgb.astype(np.float64)
    block_mean = src.reshape(64, 10, 64, 10, 3).mean(axis=(1, 3))
    assert np.abs(resize_image(rgb, 64, "area") - block_mean).max() <= 0.5
    centre = (src[4::10, 4::10] + src[5::10, 4::10] + src[4::10, 5::10] + src[5::10, 5::10]) / 4
    np.testing.assert_array_equal(resize_image(rgb, 64, "linear"), np.floor(centre + 0.5))


# ------------------------------------------------------------------------------- jpeg_quality


def pil_file_round_trip(rgb: np.ndarray, path: Path, **save_args) -> tuple[bytes, np.ndarray]:
    """The study's way: PIL writes a .jpg file, the dataset reads it back with Image.open."""
    Image.fromarray(rgb).save(path, **save_args)
    with Image.open(path) as img:
        return path.read_bytes(), np.asarray(img)


def test_jpeg_round_trip_is_pils_default_save_and_reload(tmp_path, monkeypatch):
    rgb = resize_image(photo(), 64, "linear")
    encoded = []
    real_save = Image.Image.save

    def spy(self, fp, *args, **kwargs):  # keep the bytes the switch's save writes
        real_save(self, fp, *args, **kwargs)
        encoded.append(fp.getvalue())

    monkeypatch.setattr(Image.Image, "save", spy)
    got = jpeg_round_trip(rgb, 75)
    monkeypatch.setattr(Image.Image, "save", real_save)
    # Byte for byte the file the study's `resized_image_pil.save(f"...jpg")` wrote (PIL's default
    # quality, which is 75), and the pixels its Image.open read back.
    data, pixels = pil_file_round_trip(rgb, tmp_path / "study.jpg")
    assert encoded == [data]
    assert got.dtype == np.uint8 and got.shape == (64, 64, 3)
    np.testing.assert_array_equal(got, pixels)
    np.testing.assert_array_equal(got, pil_file_round_trip(rgb, tmp_path / "q75.jpg",
                                                           quality=75)[1])
    # Lossy, and the quality is the one asked for.
    assert not np.array_equal(got, rgb)
    q95 = jpeg_round_trip(rgb, 95)
    np.testing.assert_array_equal(q95, pil_file_round_trip(rgb, tmp_path / "q95.jpg",
                                                           quality=95)[1])
    assert np.abs(q95.astype(int) - rgb).mean() < np.abs(got.astype(int) - rgb).mean()


# ---------------------------------------------------------------------------------- selection


def study_loop(coco, classes, num_samples) -> list[list[int]]:
    """Study 002's selection loop as its code reads, per class train picks then val picks. The
    study indexed past the end (IndexError) when a class ran out; here that ends the class's
    walk, which is what allow_shortfall means. Every image file exists here."""
    used_ids = []
    picks = {cls: [] for cls in classes}
    k = 0
    added = 0
    for i in range(len(num_samples)):  # train, then val
        for cls in classes:
            catIds = coco.getCatIds(catNms=[cls])  # noqa: N806 (the study's names)
            imgIds = coco.getImgIds(catIds=catIds)  # noqa: N806
            while added < num_samples[i] and k < len(imgIds):
                if imgIds[k] not in used_ids:
                    picks[cls].append(imgIds[k])
                    used_ids.append(imgIds[k])
                    added += 1
                k += 1
            k = 0
            added = 0
    return [picks[cls] for cls in classes]



@pytest.mark.realdata
@pytest.mark.parametrize(("train", "val"), [(1, 1), (2, 1), (3, 2), (5, 5), (6, 1), (7, 7)])
def test_study_selection_is_the_studys_loop_on_the_real_mini(coco_mini, train, val):
    coco = load_annotations(mini_ann(coco_mini))
    # pycocotools lists these images in set order, not by id: the walk follows that order.
    assert coco.getImgIds(catIds=[CAT_ID["dog"]]) != sorted(coco.getImgIds(catIds=[CAT_ID["dog"]]))
    cfg = dataclasses.replace(BASE, train_per_class=train, val_per_class=val,
                              allow_shortfall=True, selection="study")
    sel = select_images(coco, cfg)
    assert [list(ids) for ids in sel.picked] == study_loop(coco, TARGETS, [train, val])
    picked = [i for ids in sel.picked for i in ids]
    assert len(picked) == len(set(picked))
    # The seed plays no part in the study's order.
    assert select_images(coco, dataclasses.replace(cfg, seed=7)) == sel


@pytest.mark.realdata
def test_the_shared_image_goes_to_the_first_walk_that_reaches_it(coco_mini):
    """Image 790 holds a dog and a cake; it is sixth in pycocotools' dog list. With 5 train
    images per class the dog walk stops before it and the cake walk (later in the class order)
    takes it; with 6 the dog walk reaches it first."""
    coco = load_annotations(mini_ann(coco_mini))
    assert coco.getImgIds(catIds=[CAT_ID["dog"]]).index(790) == 5
    cfg = dataclasses.replace(BASE, allow_shortfall=True, selection="study", val_per_class=1)
    dog, cake = TARGETS.index("dog"), TARGETS.index("cake")
    five = select_images(coco, dataclasses.replace(cfg, train_per_class=5))
    assert 790 in five.picked[cake] and 790 not in five.picked[dog]
    six = select_images(coco, dataclasses.replace(cfg, train_per_class=6))
    assert 790 in six.picked[dog] and 790 not in six.picked[cake]


def hand_made(images_of: dict[str, list[int]]) -> dict:
    """A minimal COCO dict: image i holds the classes whose list contains i."""
    ids = sorted({i for ids in images_of.values() for i in ids})
    anns = [{"id": n + 1, "image_id": i, "category_id": CAT_ID[c], "bbox": [0, 0, 1, 1],
             "area": 1.0, "iscrowd": 0}
            for n, (c, i) in enumerate((c, i) for c, ids in images_of.items() for i in ids)]
    return {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 9, "height": 9}
                       for i in ids],
            "annotations": anns,
            "categories": [{"id": CAT_ID[c], "name": c, "supercategory": "x"} for c in images_of]}


HAND = {"dog": [1, 2, 3, 4, 5, 6], "couch": [2, 3, 7, 8, 9], "cake": [1, 7, 10, 11]}


def test_study_selection_on_hand_made_annotations():
    """Worked by hand, in pycocotools' order (cake's set lists 1, 10, 11, 7): train first, dog
    takes 1 2; couch skips 2, takes 3 7; cake skips 1, takes 10 11. Then val: dog skips 1 2 3,
    takes 4; couch takes 8; cake has nothing left (7 is couch's). Image 3 (dog and couch) is
    couch's: the couch train walk reaches it before the dog val walk. Taking a class's train and
    val before the next class would give dog 1 2 3."""
    coco = index_annotations(hand_made(HAND))
    order = {name: coco.getImgIds(catIds=[CAT_ID[name]]) for name in HAND}
    assert order == {**HAND, "cake": [1, 10, 11, 7]}  # the order worked with below
    cfg = dataclasses.replace(BASE, classes=("dog", "couch", "cake"), train_per_class=2,
                              val_per_class=1, allow_shortfall=True, selection="study")
    sel = select_images(coco, cfg)
    assert sel.picked == ((1, 2, 4), (3, 7, 8), (10, 11))
    assert [list(p) for p in sel.picked] == study_loop(coco, cfg.classes, [2, 1])
    assert sel.shortfalls == {"cake": 1}
    assert [split for _, label, split in sel.assignments() if label == 2] == ["train", "train"]
    assert sel.spares == ((5, 6), (9,), ())
    for seed in range(5):  # cnnlab's seeded turns pick differently
        seeded = select_images(coco, dataclasses.replace(cfg, selection="seeded", seed=seed))
        assert seeded.picked != sel.picked


def test_study_selection_without_allow_shortfall_names_the_class():
    coco = index_annotations(hand_made(HAND))
    cfg = dataclasses.replace(BASE, classes=("dog", "couch", "cake"), train_per_class=2,
                              val_per_class=1, selection="study")
    with pytest.raises(CnnlabError, match=r"^class 'cake': 4 eligible images \(2 of them taken by "
                                        r"other classes\), 3 asked"):
        select_images(coco, cfg)


def test_study_selection_follows_pycocotools_order_not_ids():
    """Ids 8 and 1 in an 8-slot set: pycocotools lists 8 first, and so does the study's walk."""
    coco = index_annotations(hand_made({"dog": [1, 8, 3], "cake": [2, 4]}))
    order = coco.getImgIds(catIds=[CAT_ID["dog"]])
    assert order != sorted(order)
    cfg = dataclasses.replace(BASE, classes=("dog", "cake"), selection="study")
    sel = select_images(coco, cfg)
    assert list(sel.picked[0]) == order[:2]
    assert [list(p) for p in sel.picked] == study_loop(coco, cfg.classes, [1, 1])


# ------------------------------------------------------------------------ through the build


def study_pipeline(path: Path, scratch: Path) -> np.ndarray:
    """Study 002's image steps for one file: cv2.imread, BGR -> RGB, cv2.resize with its default
    filter, PIL save as .jpg (default quality), PIL open."""
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    Image.fromarray(cv2.resize(rgb, (64, 64))).save(scratch)
    with Image.open(scratch) as img:
        return np.asarray(img)


@pytest.mark.realdata
def test_build_with_the_studys_three_switches_on_the_mini(coco_mini, tmp_path):
    cfg = dataclasses.replace(BASE, image_source=str(coco_mini), allow_shortfall=True,
                              train_per_class=2, val_per_class=1, interpolation="linear",
                              jpeg_quality=75, selection="study")
    ds = build_coco5(cfg, mini_ann(coco_mini), tmp_path / "prepared", tmp_path / "browse",
                     tmp_path / "cache", progress=False)
    coco = load_annotations(mini_ann(coco_mini))
    expected = study_loop(coco, TARGETS, [2, 1])
    for split, first, last in (("train", 0, 2), ("val", 2, 3)):
        ids = [i for ids in expected for i in ids[first:last]]
        labels = [c for c, ids in enumerate(expected) for _ in ids[first:last]]
        arrays = ds.split(split)
        np.testing.assert_array_equal(arrays.labels, labels)
        want = np.stack([study_pipeline(coco_mini / "train2017" / f"{i:012d}.jpg",
                                        tmp_path / "s.jpg") for i in ids])
        np.testing.assert_array_equal(arrays.images, want)
    assert ds.source["selection"] == "study" and ds.source["jpeg_quality"] == 75
    assert ds.source["resize"].startswith("cv2.INTER_LINEAR")
    assert load_prepared(tmp_path / "prepared").source == ds.source


@pytest.mark.realdata
def test_default_build_keeps_inter_area_pixels_lossless(coco_mini, tmp_path):
    cfg = dataclasses.replace(BASE, image_source=str(coco_mini), allow_shortfall=True)
    ds = build_coco5(cfg, mini_ann(coco_mini), tmp_path / "prepared", tmp_path / "browse",
                     tmp_path / "cache", progress=False)
    sel = select_images(load_annotations(mini_ann(coco_mini)), cfg)
    ids = [ids[0] for ids in sel.picked]  # each class's train image
    want = [cv2.resize(cv2.cvtColor(cv2.imread(str(coco_mini / "train2017" / f"{i:012d}.jpg")),
                                    cv2.COLOR_BGR2RGB), (64, 64), interpolation=cv2.INTER_AREA)
            for i in ids]
    np.testing.assert_array_equal(ds.split("train").images, np.stack(want))
    assert ds.source["selection"] == "seeded" and ds.source["jpeg_quality"] is None
    assert ds.source["resize"].startswith("cv2.INTER_AREA")


# --------------------------------------------------------------------------- params and dvc


def project_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_defaults_in_params_yaml_are_cnnlabs():
    coco5 = parse_params(project_raw()).data.coco5
    assert (coco5.interpolation, coco5.jpeg_quality, coco5.selection) == ("area", None, "seeded")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("interpolation", "cubic", r"^data\.coco5\.interpolation: 'cubic' is not valid \(choose from: "
                               r"area, linear\)$"),
    ("jpeg_quality", 0, r"^data\.coco5\.jpeg_quality: must be >= 1, got 0$"),
    ("jpeg_quality", 101, r"^data\.coco5\.jpeg_quality: must be <= 100, got 101$"),
    ("jpeg_quality", True, r"^data\.coco5\.jpeg_quality: expected int, got bool True$"),
    ("jpeg_quality", "75", r"^data\.coco5\.jpeg_quality: expected int, got str '75'$"),
    ("selection", "random", r"^data\.coco5\.selection: 'random' is not valid \(choose from: "
                            r"seeded, study\)$"),
])
def test_bad_switch_values_are_one_line_naming_the_key(key, value, message):
    raw = project_raw()
    raw["data"]["coco5"][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_studys_values_are_accepted():
    raw = project_raw()
    raw["data"]["coco5"].update(interpolation="linear", jpeg_quality=75, selection="study")
    coco5 = parse_params(raw).data.coco5
    assert (coco5.interpolation, coco5.jpeg_quality, coco5.selection) == ("linear", 75, "study")


def test_build_coco5_stage_lists_every_setting_that_shapes_the_dataset():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["build_coco5"]
    listed = {p.removeprefix("data.coco5.") for p in stage["params"]}
    fields = {f.name for f in dataclasses.fields(Coco5Config)}
    # annotations is download_coco's; workers and retries do not change the dataset.
    assert listed == fields - {"annotations", "workers", "retries"}


def test_jpeg_round_trip_reads_back_what_pil_decodes_from_memory():
    rgb = photo(64, 64, seed=3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    np.testing.assert_array_equal(jpeg_round_trip(rgb, 75), np.asarray(Image.open(buffer)))
