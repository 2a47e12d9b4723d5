"""COCO 5-class selection and build: the real mini subset, a 100,000-image generated file, and every
way an image host can fail (served from a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from coco_fixtures import (
    CAT_ID,
    TARGETS,
    generate_coco,
    image_files,
    jpeg_bytes,
    mini_ann,
    target_image_ids,
    write_json,
)
from httpserver import LocalServer, dead_url

from cnnlab.config import Coco5Config, DownloadSource
from cnnlab.data import coco_build
from cnnlab.data.coco5 import SPLITS, index_annotations, load_annotations, select_images
from cnnlab.data.coco_build import build_coco5
from cnnlab.data.prepared import load_prepared
from cnnlab.errors import CnnlabError

BASE = Coco5Config(annotations=DownloadSource(url="unused", md5=None), classes=TARGETS,
                   train_per_class=1, val_per_class=1, workers=4, retries=1)
SMALL = dataclasses.replace(BASE, train_per_class=3, val_per_class=2)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(coco_build, "BACKOFF", 0.01)
    monkeypatch.setattr(coco_build, "TIMEOUT", 5.0)


def build(cfg: Coco5Config, annotations: Path, out: Path, cache: Path | None = None):
    """build_coco5 into out/{prepared,browse} with cache out/cache (or `cache`)."""
    return build_coco5(cfg, annotations, out / "prepared", out / "browse",
                       cache or out / "cache", progress=False)


def read_manifest(browse: Path) -> list[dict]:
    with open(browse / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def url_path(image_id: int, split: str = "train2017") -> str:
    return f"{split}/{image_id:012d}.jpg"


def check_build(ds, out: Path, cfg: Coco5Config, annotations: Path) -> list[dict]:
    """Every invariant of a finished build; returns the manifest rows."""
    coco = load_annotations(annotations)
    cat_of = {c["name"]: c["id"] for c in coco.cats.values()}
    browse = out / "browse"
    rows = read_manifest(browse)
    assert list(rows[0]) == list(coco_build.MANIFEST_FIELDS)
    ids = [int(r["image_id"]) for r in rows]
    assert len(ids) == len(set(ids)), "an image appears twice"
    for r in rows:
        held = {a["category_id"] for a in coco.imgToAnns[int(r["image_id"])]}
        assert cat_of[r["class"]] in held, f"image {r['image_id']} holds no {r['class']}"
        if cfg.exclusive:
            assert len(held & {cat_of[c] for c in cfg.classes}) == 1
        assert int(r["label"]) == cfg.classes.index(r["class"])
        record = coco.imgs[int(r["image_id"])]
        assert {int(r["original_width"]), int(r["original_height"])} \
            == {record["width"], record["height"]}
        assert r["replacement"] == ("true" if r["replaces"] else "false")
    for split in SPLITS:
        split_rows = [r for r in rows if r["split"] == split]
        arrays = ds.split(split)
        assert arrays.images.shape == (len(split_rows), cfg.image_size, cfg.image_size, 3)
        np.testing.assert_array_equal(arrays.labels, [int(r["label"]) for r in split_rows])
        for index, r in enumerate(split_rows):
            path = browse / split / r["class"] / f"{r['image_id']}.jpg"
            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert bgr is not None and bgr.shape == (64, 64, 3) and bgr.dtype == np.uint8
            jpeg_rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int)
            # The JPEG is lossy: it must be close to its own array row, and closer than any other.
            errors = np.abs(arrays.images.astype(int) - jpeg_rgb).mean(axis=(1, 2, 3))
            assert errors[index] < 5 and errors.argmin() == index
    files = {p.relative_to(browse).as_posix() for p in browse.rglob("*") if p.is_file()}
    assert files == {f"{r['split']}/{r['class']}/{r['image_id']}.jpg" for r in rows} \
        | {"manifest.csv", "sample_grid.png"}
    png = (browse / "sample_grid.png").read_bytes()
    assert png[:8] == PNG_MAGIC
    grid = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert grid is not None and grid.shape[1] >= 600 and grid.shape[0] >= 300
    loaded = load_prepared(out / "prepared")
    assert loaded.name == "coco5" and loaded.classes == cfg.classes
    assert loaded.source == ds.source
    for split in SPLITS:
        np.testing.assert_array_equal(loaded.split(split).images, ds.split(split).images)
        np.testing.assert_array_equal(loaded.split(split).labels, ds.split(split).labels)
    return rows


def assert_same_build(a: Path, b: Path) -> None:
    """Two build folders hold identical arrays, meta and manifest."""
    pa, pb = load_prepared(a / "prepared"), load_prepared(b / "prepared")
    assert pa.source == pb.source
    for split in SPLITS:
        np.testing.assert_array_equal(pa.split(split).images, pb.split(split).images)
        np.testing.assert_array_equal(pa.split(split).labels, pb.split(split).labels)
    assert read_manifest(a / "browse") == read_manifest(b / "browse")


def nothing_written(out: Path) -> None:
    assert not (out / "prepared").exists() and not (out / "browse").exists()
    assert [p.name for p in out.iterdir() if p.name != "cache"] == []


# -------------------------------------------------------------------------- real mini subset



@pytest.mark.realdata
def test_real_mini_over_http(coco_mini, tmp_path):
    """train2017 of the mini holds boat 2, couch 2, dog 7, cake 3 (one shared with dog) and
    motorcycle 1 images: 1 train + 1 val per class fits all but motorcycle, which runs short."""
    with LocalServer(coco_mini) as server:
        cfg = dataclasses.replace(BASE, image_source=server.url(""), allow_shortfall=True)
        ds = build(cfg, mini_ann(coco_mini), tmp_path / "a")
        rows = check_build(ds, tmp_path / "a", cfg, mini_ann(coco_mini))
        # Only the selected images were fetched, each once.
        assert server.counts() == {url_path(int(r["image_id"])): 1 for r in rows}
        server.requests.clear()
        build(cfg, mini_ann(coco_mini), tmp_path / "b", cache=tmp_path / "a" / "cache")
        assert server.counts() == {}  # a re-run with a full cache fetches nothing
        base = server.url("")
    assert_same_build(tmp_path / "a", tmp_path / "b")

    counts = ds.source["counts"]
    assert counts["train"] == dict.fromkeys(TARGETS, 1)
    assert counts["val"] == {**dict.fromkeys(TARGETS, 1), "motorcycle": 0}
    assert ds.source["shortfalls"] == {"motorcycle": 1}
    assert ds.source["eligible"] == {"boat": 2, "couch": 2, "dog": 7, "cake": 3, "motorcycle": 1}
    assert ds.source["replaced"] == 0 and len(rows) == 9
    assert [r["source_url"] for r in rows] == [base + url_path(int(r["image_id"])) for r in rows]


@pytest.mark.realdata
def test_real_mini_shortfall_fails_naming_the_class(coco_mini, tmp_path):
    cfg = dataclasses.replace(BASE, image_source=str(coco_mini))
    with pytest.raises(CnnlabError) as info:
        build(cfg, mini_ann(coco_mini), tmp_path)
    assert str(info.value) == ("class 'motorcycle': 1 eligible images, 2 asked (train 1 + val 1);"
                               " set data.coco5.allow_shortfall: true to take what there is")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.realdata
def test_real_mini_exclusive_drops_multi_class_images(coco_mini, tmp_path):
    coco = load_annotations(mini_ann(coco_mini))
    everything = dataclasses.replace(BASE, train_per_class=5, val_per_class=5,
                                     allow_shortfall=True)
    sets = {c: set(coco.getImgIds(catIds=[CAT_ID[c]])) for c in TARGETS}
    multi = {i for i in set().union(*sets.values()) if sum(i in s for s in sets.values()) > 1}
    assert multi == {790}  # dog + cake

    loose = select_images(coco, everything)
    picked = [i for ids in loose.picked for i in ids]
    assert len(picked) == len(set(picked)) == 14  # all 14 distinct images, 790 once
    assert 790 in picked
    strict = select_images(coco, dataclasses.replace(everything, exclusive=True))
    picked = [i for ids in strict.picked for i in ids]
    assert 790 not in picked and len(picked) == 13
    assert strict.eligible == (2, 2, 6, 2, 1)

    cfg = dataclasses.replace(BASE, image_source=str(coco_mini), exclusive=True,
                              allow_shortfall=True)
    ds = build(cfg, mini_ann(coco_mini), tmp_path)
    rows = check_build(ds, tmp_path, cfg, mini_ann(coco_mini))
    assert "790" not in {r["image_id"] for r in rows}
    assert ds.source["exclusive"] is True and ds.source["shortfalls"] == {"motorcycle": 1}


@pytest.mark.realdata
def test_real_mini_local_folder_and_file_url_match_http(coco_mini, tmp_path):
    cfg = dataclasses.replace(BASE, allow_shortfall=True, seed=3)
    with LocalServer(coco_mini) as server:
        build(dataclasses.replace(cfg, image_source=server.url("")), mini_ann(coco_mini),
              tmp_path / "http")
    folder_cfg = dataclasses.replace(cfg, image_source=str(coco_mini))
    ds = build(folder_cfg, mini_ann(coco_mini), tmp_path / "folder")
    check_build(ds, tmp_path / "folder", folder_cfg, mini_ann(coco_mini))
    assert not (tmp_path / "folder" / "cache").exists()  # a local folder is read in place
    build(dataclasses.replace(cfg, image_source=coco_mini.as_uri()), mini_ann(coco_mini),
          tmp_path / "file")
    assert len(list((tmp_path / "file" / "cache" / "train2017").iterdir())) == 9

    ref = load_prepared(tmp_path / "http" / "prepared")
    ref_rows = read_manifest(tmp_path / "http" / "browse")
    for name in ("folder", "file"):
        got = load_prepared(tmp_path / name / "prepared")
        for split in SPLITS:
            np.testing.assert_array_equal(got.split(split).images, ref.split(split).images)
            np.testing.assert_array_equal(got.split(split).labels, ref.split(split).labels)
        rows = read_manifest(tmp_path / name / "browse")
        strip = [{k: v for k, v in r.items() if k != "source_url"} for r in rows]
        assert strip == [{k: v for k, v in r.items() if k != "source_url"} for r in ref_rows]
    rows = read_manifest(tmp_path / "folder" / "browse")
    image_id = int(rows[0]["image_id"])
    assert rows[0]["source_url"] == str(coco_mini / "train2017" / f"{image_id:012d}.jpg")


@pytest.mark.realdata
def test_real_mini_bad_folder_is_one_line(coco_mini, tmp_path):
    cfg = dataclasses.replace(BASE, image_source=str(tmp_path / "nowhere"), allow_shortfall=True)
    with pytest.raises(CnnlabError, match=r"^image_source folder has no train2017/ subfolder: "):
        build(cfg, mini_ann(coco_mini), tmp_path / "out")


# ------------------------------------------------------------------- selection at full scale


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("coco-big") / "instances_train2017.json"
    write_json(path, generate_coco(100_000, seed=0))
    start = time.perf_counter()
    coco = load_annotations(path)
    return coco, time.perf_counter() - start


def test_selection_at_scale(big, capsys):
    coco, load_s = big
    assert len(coco.imgs) == 100_000
    cfg = dataclasses.replace(BASE, train_per_class=1600, val_per_class=400)
    sets = {c: set(coco.catToImgs[CAT_ID[c]]) for c in TARGETS}
    timings = {}
    for exclusive in (False, True):
        start = time.perf_counter()
        sel = select_images(coco, dataclasses.replace(cfg, exclusive=exclusive))
        timings[exclusive] = time.perf_counter() - start
        picked = [i for ids in sel.picked for i in ids]
        assert [len(ids) for ids in sel.picked] == [2000] * 5 and sel.shortfalls == {}
        assert len(set(picked)) == 10_000  # no image twice, across classes and splits
        for name, ids, spares in zip(TARGETS, sel.picked, sel.spares, strict=True):
            assert set(ids) <= sets[name] and set(spares) <= sets[name]
            assert not set(spares) & set(picked)
            if exclusive:
                assert all(sum(i in s for s in sets.values()) == 1 for i in ids)
        splits = [split for _, _, split in sel.assignments()]
        assert splits.count("train") == 8000 and splits.count("val") == 2000
    with capsys.disabled():
        print(f"\n  100,000-image annotations: load+index {load_s:.2f} s, selection "
              f"{timings[False]:.3f} s, exclusive selection {timings[True]:.3f} s")
    assert max(timings.values()) < 60


def test_selection_is_seeded(big):
    coco, _ = big
    cfg = dataclasses.replace(BASE, train_per_class=1600, val_per_class=400)
    a, b = select_images(coco, cfg), select_images(coco, cfg)
    assert a == b
    c = select_images(coco, dataclasses.replace(cfg, seed=1))
    assert c.picked != a.picked
    assert all(set(x) != set(y) for x, y in zip(a.picked, c.picked, strict=True))


def tiny_coco(images_of: dict[str, list[int]]) -> dict:
    """A minimal COCO dict: image i holds the classes whose list contains i."""
    ids = sorted({i for ids in images_of.values() for i in ids})
    anns = [{"id": n + 1, "image_id": i, "category_id": CAT_ID[c], "bbox": [0, 0, 1, 1],
             "area": 1.0, "iscrowd": 0}
            for n, (c, i) in enumerate((c, i) for c, ids in images_of.items() for i in ids)]
    return {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 9, "height": 9,
                        "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg"}
                       for i in ids],
            "annotations": anns,
            "categories": [{"id": CAT_ID[c], "name": c, "supercategory": "x"}
                           for c in images_of]}


def test_round_robin_keeps_a_rare_class_from_being_starved():
    """dog comes first and shares all 6 of boat's images: taking turns leaves boat at least 3."""
    coco = index_annotations(tiny_coco({"dog": list(range(1, 31)), "boat": list(range(1, 7))}))
    cfg = dataclasses.replace(BASE, classes=("dog", "boat"), train_per_class=4, val_per_class=2,
                              allow_shortfall=True)
    for seed in range(30):
        sel = select_images(coco, dataclasses.replace(cfg, seed=seed))
        dog, boat = sel.picked
        assert len(dog) == 6 and len(boat) >= 3 and not set(dog) & set(boat)
        assert set(boat) <= set(range(1, 7))
    # A pool of 4 images both classes hold, 4 asked each (train 3 + val 1): turns split it 2 and
    # 2, whatever the seed; study 002's class-after-class walk would give dog 3 and boat 1.
    shared = index_annotations(tiny_coco({"dog": [1, 2, 3, 4], "boat": [1, 2, 3, 4]}))
    cfg = dataclasses.replace(cfg, train_per_class=3, val_per_class=1)
    for seed in range(10):
        dog, boat = select_images(shared, dataclasses.replace(cfg, seed=seed)).picked
        assert (len(dog), len(boat)) == (2, 2) and set(dog) | set(boat) == {1, 2, 3, 4}


def test_unknown_class_and_shortfall_messages():
    coco = index_annotations(tiny_coco({"dog": [1, 2, 3], "cake": [3, 4]}))
    cfg = dataclasses.replace(BASE, classes=("dog", "unicorn"))
    with pytest.raises(CnnlabError) as info:
        select_images(coco, cfg, label="x.json")
    assert str(info.value) == "class 'unicorn' is not a category in x.json; available: cake, dog"
    cfg = dataclasses.replace(BASE, classes=("dog", "cake"), train_per_class=1, val_per_class=1)
    with pytest.raises(CnnlabError, match=r"^class 'cake': 1 eligible images \(holding no other"):
        select_images(coco, dataclasses.replace(cfg, exclusive=True))
    sel = select_images(coco, dataclasses.replace(cfg, exclusive=True, allow_shortfall=True))
    assert sel.picked[1] == (4,) and sel.shortfalls == {"cake": 1}
    assert [s for _, label, s in sel.assignments() if label == 1] == ["train"]  # train first


def test_bad_annotation_files(tmp_path):
    with pytest.raises(CnnlabError, match="^COCO annotation file not found: "):
        load_annotations(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(CnnlabError, match="is not valid JSON"):
        load_annotations(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text('{"images": []}', encoding="utf-8")
    with pytest.raises(CnnlabError, match=r"not a COCO instances file \(no annotations, "):
        load_annotations(tmp_path / "list.json")


# --------------------------------------------------------------- build against a faulty host


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """120 generated images, small JPEGs, each target class on ~25% of them; motorcycle rarer."""
    rates = {**dict.fromkeys(TARGETS, 0.25), "motorcycle": 0.07}
    dataset = generate_coco(120, seed=7, rates=rates, pairs=[("dog", "couch", 0.3)],
                            sizes=[(96, 72), (72, 96), (80, 64)], other_mean=1.0)
    path = write_json(tmp_path_factory.mktemp("coco-small") / "instances_train2017.json", dataset)
    files = image_files(dataset, only=target_image_ids(dataset))
    return path, files


@pytest.fixture
def host(small):
    with LocalServer(small[1]) as server:
        yield server


def cfg_for(server: LocalServer, **changes) -> Coco5Config:
    return dataclasses.replace(SMALL, image_source=server.url(""), **changes)


def test_clean_build_is_independent_of_worker_count(small, host, tmp_path):
    ann = small[0]
    ds = build(cfg_for(host, workers=1), ann, tmp_path / "one")
    rows = check_build(ds, tmp_path / "one", cfg_for(host), ann)
    sel = select_images(load_annotations(ann), SMALL)
    assert [(int(r["image_id"]), int(r["label"]), r["split"]) for r in rows] == sel.assignments()
    assert ds.source["replaced"] == 0 and ds.source["shortfalls"] == {}
    assert ds.source["counts"] == {"train": dict.fromkeys(TARGETS, 3),
                                   "val": dict.fromkeys(TARGETS, 2)}
    build(cfg_for(host, workers=8), ann, tmp_path / "eight")
    assert_same_build(tmp_path / "one", tmp_path / "eight")


def first_free_spare(sel, label: int, taken: set[int]) -> int:
    return next(i for i in sel.spares[label] if i not in taken)


def test_404_is_replaced_by_the_next_spare_of_its_class(small, host, tmp_path, caplog):
    ann = small[0]
    sel = select_images(load_annotations(ann), SMALL)
    gone = {sel.picked[0][0]: 0, sel.picked[2][4]: 2}  # boat train #0, dog val #1
    for image_id in gone:
        host.not_found(url_path(image_id))
    ds = build(cfg_for(host), ann, tmp_path)
    rows = check_build(ds, tmp_path, cfg_for(host), ann)

    taken: set[int] = set()
    expected = {}
    for image_id, label in gone.items():  # resolved in class order, then position
        expected[image_id] = first_free_spare(sel, label, taken)
        taken.add(expected[image_id])
    by_id = {int(r["image_id"]): r for r in rows}
    for bad, new in expected.items():
        assert bad not in by_id
        assert by_id[new]["replacement"] == "true" and by_id[new]["replaces"] == str(bad)
    assert by_id[expected[sel.picked[0][0]]]["split"] == "train"
    assert by_id[expected[sel.picked[2][4]]]["split"] == "val"
    # The replacement takes the failed image's place: the rows keep the selection's order.
    order = [int(r["image_id"]) for r in rows]
    want = [expected.get(i, i) for i, _, _ in sel.assignments()]
    assert order == want
    assert ds.source["replaced"] == 2
    assert ds.source["unusable"] == [{"image_id": sel.picked[0][0], "class": "boat"},
                                     {"image_id": sel.picked[2][4], "class": "dog"}]
    assert sum("unusable: HTTP 404" in m for m in caplog.messages) == 2
    for image_id in gone:
        assert host.count(url_path(image_id)) == 1  # a 404 is not retried
        assert not (tmp_path / "cache" / url_path(image_id)).exists()


def test_connection_cut_mid_body_is_retried(small, host, tmp_path):
    ann = small[0]
    sel = select_images(load_annotations(ann), SMALL)
    build(cfg_for(host), ann, tmp_path / "clean", cache=tmp_path / "clean-cache")
    host.requests.clear()
    cut = [sel.picked[1][0], sel.picked[3][2]]
    for image_id in cut:
        host.cut(url_path(image_id), times=1)
    ds = build(cfg_for(host), ann, tmp_path / "cut")
    assert ds.source["replaced"] == 0
    for image_id in cut:
        assert host.count(url_path(image_id)) == 2
    assert_same_build(tmp_path / "clean", tmp_path / "cut")


def test_corrupt_images_are_replaced_and_not_cached(small, tmp_path):
    ann, files = small
    sel = select_images(load_annotations(ann), SMALL)
    truncated, garbage, wrong_size = sel.picked[0][1], sel.picked[1][2], sel.picked[4][0]
    files = dict(files)
    files[url_path(truncated)] = files[url_path(truncated)][:-200]
    files[url_path(garbage)] = b"<html>this is not an image</html>"
    files[url_path(wrong_size)] = jpeg_bytes(50, 50, seed=1)
    with LocalServer(files) as server:
        ds = build(cfg_for(server), ann, tmp_path)
        rows = check_build(ds, tmp_path, cfg_for(server), ann)
    assert ds.source["replaced"] == 3 and ds.source["shortfalls"] == {}
    kept = {int(r["image_id"]) for r in rows}
    for image_id in (truncated, garbage, wrong_size):
        assert image_id not in kept
        assert not (tmp_path / "cache" / url_path(image_id)).exists()
    assert {int(r["replaces"]) for r in rows if r["replaces"]} == {truncated, garbage, wrong_size}


def test_damaged_cache_file_is_fetched_again_not_replaced(small, host, tmp_path):
    ann = small[0]
    sel = select_images(load_annotations(ann), SMALL)
    damaged = tmp_path / "cache" / url_path(sel.picked[2][0])
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\xff\xd8 half a jpeg")
    ds = build(cfg_for(host), ann, tmp_path)
    assert ds.source["replaced"] == 0
    assert host.count(url_path(sel.picked[2][0])) == 1
    assert damaged.read_bytes() == small[1][url_path(sel.picked[2][0])]


def test_server_down_stops_with_one_line_and_writes_nothing(small, tmp_path):
    base = dead_url("x").rsplit("/", 1)[0] + "/"
    cfg = dataclasses.replace(SMALL, image_source=base, retries=1)
    with pytest.raises(CnnlabError) as info:
        build(cfg, small[0], tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("COCO image ")
    assert f"could not download {base}train2017/" in message and "after 2 attempts" in message
    nothing_written(tmp_path)


def test_persistent_5xx_stops_rather_than_replacing(small, host, tmp_path):
    ann = small[0]
    sel = select_images(load_annotations(ann), SMALL)
    host.fail(url_path(sel.picked[3][0]), times=100, status=503)
    with pytest.raises(CnnlabError, match=r"HTTP 503 Service Unavailable") as info:
        build(cfg_for(host), ann, tmp_path)
    assert host.url(url_path(sel.picked[3][0])) in str(info.value)
    assert host.count(url_path(sel.picked[3][0])) == 2  # retries=1
    nothing_written(tmp_path)


def test_source_that_404s_everything_stops(small, host, tmp_path):
    cfg = dataclasses.replace(SMALL, image_source=host.url("wrong/"))
    with pytest.raises(CnnlabError, match=r"^25 of 25 COCO images could not be used .*"
                                          r"check data\.coco5\.image_source$"):
        build(cfg, small[0], tmp_path)
    nothing_written(tmp_path)


def test_out_of_spares(small, host, tmp_path):
    """motorcycle (label 4) loses 4 of its 5 picks and every spare."""
    ann = small[0]
    sel = select_images(load_annotations(ann), SMALL)
    assert 1 <= len(sel.spares[4]) <= 6
    for image_id in sel.picked[4][:4] + sel.spares[4]:
        host.not_found(url_path(image_id))
    with pytest.raises(CnnlabError, match=r"^class 'motorcycle': no spare image left to replace"):
        build(cfg_for(host), ann, tmp_path / "strict")
    nothing_written(tmp_path / "strict")
    ds = build(cfg_for(host, allow_shortfall=True), ann, tmp_path / "loose")
    check_build(ds, tmp_path / "loose", cfg_for(host), ann)
    assert ds.source["shortfalls"] == {"motorcycle": 4}
    # The one survivor was picked for val (position 4) but train is filled first.
    assert ds.source["counts"]["train"]["motorcycle"] == 1
    assert ds.source["counts"]["val"]["motorcycle"] == 0


KILLED_RUN = """
import dataclasses, json, sys
from cnnlab.config import Coco5Config, DownloadSource
from cnnlab.data.coco_build import build_coco5
args = json.loads(sys.argv[1])
cfg = args["cfg"]
cfg = Coco5Config(**{**cfg, "annotations": DownloadSource(**cfg["annotations"]),
                     "classes": tuple(cfg["classes"])})
build_coco5(cfg, args["ann"], args["prepared"], args["browse"], args["cache"], progress=False)
"""


def test_killed_midway_then_resumed_equals_uninterrupted(small, tmp_path):
    ann, files = small
    sel = select_images(load_annotations(ann), SMALL)
    with LocalServer(files, delay=0.05) as server:
        for image_id in (sel.picked[0][2], sel.picked[3][0]):
            server.not_found(url_path(image_id))
        cfg = cfg_for(server, workers=2)
        build(cfg, ann, tmp_path / "reference")
        needed = set(server.counts())  # selection, replacements and the two 404s
        server.requests.clear()

        out = tmp_path / "resumed"
        args = {"cfg": dataclasses.asdict(cfg), "ann": str(ann), "prepared": str(out / "prepared"),
                "browse": str(out / "browse"), "cache": str(out / "cache")}
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, json.dumps(args)])
        try:
            deadline = time.monotonic() + 60
            while sum(server.counts().values()) < 10 and proc.poll() is None:
                assert time.monotonic() < deadline, "the build never got going"
                time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode != 0, "the build finished before it could be killed"
        nothing_written(out)
        cached = {p.relative_to(out / "cache").as_posix()
                  for p in (out / "cache").rglob("*.jpg") if not p.name.startswith(".")}
        assert 5 <= len(cached) < 25

        server.requests.clear()
        build(cfg, ann, out)
        refetched = server.counts()
    # Only what the killed run had not cached is fetched, each once (404s are never cached).
    assert refetched == dict.fromkeys(needed - cached, 1)
    assert list((out / "cache").rglob(".*.tmp")) == []
    assert_same_build(tmp_path / "reference", out)
