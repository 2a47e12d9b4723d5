"""CIFAR-10 archives in, prepared arrays out: both layouts, every way an archive can be wrong."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from cifar_archives import (
    BIN_DIR,
    CLASSES,
    encode_image,
    link_member,
    truncate,
    write_binary_archive,
    write_imagefolder_archive,
)

from cnnlab.data.cifar10 import prepare_cifar10, read_cifar10_archive
from cnnlab.data.prepared import load_prepared
from cnnlab.errors import CnnlabError

ARCHIVE = "cifar10.archive"  # the download stage's fixed name: the format must come from content


def assert_fails_cleanly(archive: Path, match: str) -> None:
    """prepare_cifar10 raises a one-line CnnlabError matching `match` and leaves nothing behind."""
    with pytest.raises(CnnlabError, match=match) as info:
        prepare_cifar10(archive, archive.parent / "prepared")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]


def record(label: int, **pixels: int) -> bytearray:
    """One 3,073-byte record, zero except `pixels` given as c<channel>_<row>_<col>=value."""
    rec = bytearray(3073)
    rec[0] = label
    for key, value in pixels.items():
        channel, row, col = (int(x) for x in key[1:].split("_"))
        rec[1 + channel * 1024 + row * 32 + col] = value
    return rec


# ------------------------------------------------------------------------------ binary format


@pytest.mark.parametrize("reverse", [False, True])
def test_binary_matches_generated(tmp_path, reverse):
    archive = tmp_path / ARCHIVE
    expected = write_binary_archive(archive, records_per_batch=7, seed=3, reverse=reverse)
    ds = read_cifar10_archive(archive)
    assert ds.name == "cifar10" and ds.classes == CLASSES
    for split in ("train", "test"):
        images, labels = expected[split]
        got = ds.split(split)
        assert got.images.dtype == np.uint8 and got.labels.dtype == np.int64
        np.testing.assert_array_equal(got.images, images)
        np.testing.assert_array_equal(got.labels, labels)
    assert len(ds.split("train")) == 35 and len(ds.split("test")) == 7
    assert ds.source == {"archive": ARCHIVE, "format": "cifar-binary",
                         "md5": hashlib.md5(archive.read_bytes()).hexdigest()}


def test_binary_record_layout_and_batch_order(tmp_path):
    """Byte 0 is the label, then R, G, B planes row-major; train is batches 1..5 in order."""
    archive = tmp_path / ARCHIVE
    raw = {f"data_batch_{i}": bytes(record(i) * 2) for i in range(1, 6)}
    raw["data_batch_2"] = bytes(record(0) + record(4, c1_5_7=200)
                                + record(9, c0_0_31=17, c2_31_0=5))
    raw["test_batch"] = bytes(record(3, c2_1_2=77))
    write_binary_archive(archive, raw=raw, reverse=True)
    ds = read_cifar10_archive(archive)
    train, test = ds.split("train"), ds.split("test")
    assert train.labels.tolist() == [1, 1, 0, 4, 9, 3, 3, 4, 4, 5, 5]
    assert train.images[3, 5, 7].tolist() == [0, 200, 0]
    assert train.images[3].sum() == 200
    assert train.images[4, 0, 31].tolist() == [17, 0, 0]
    assert train.images[4, 31, 0].tolist() == [0, 0, 5]
    assert test.labels.tolist() == [3] and test.images[0, 1, 2].tolist() == [0, 0, 77]


def test_binary_class_names_without_meta_are_official(tmp_path):
    archive = tmp_path / ARCHIVE
    write_binary_archive(archive, records_per_batch=2, include_meta=False,
                         extra_members=[(f"{BIN_DIR}/readme.html", b"<html></html>")])
    assert read_cifar10_archive(archive).classes == CLASSES


def test_binary_prepare_round_trip(tmp_path):
    archive = tmp_path / ARCHIVE
    expected = write_binary_archive(archive, records_per_batch=5)
    prepared = prepare_cifar10(archive, tmp_path / "out" / "cifar10")
    loaded = load_prepared(tmp_path / "out" / "cifar10")
    assert loaded.classes == CLASSES and loaded.source == prepared.source
    np.testing.assert_array_equal(loaded.split("train").images, expected["train"][0])
    np.testing.assert_array_equal(loaded.split("test").labels, expected["test"][1])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cifar10"]


def _truncated(path):
    write_binary_archive(path, records_per_batch=50)
    truncate(path, 0.5)


BAD_BINARY = {
    "truncated": (_truncated, r"truncated or corrupt archive .*cifar10\.archive"),
    "unexpected name": (dict(extra_members=[(f"{BIN_DIR}/data_batch_6.bin", b"x" * 3073)]),
                        r"unexpected member 'cifar-10-batches-bin/data_batch_6\.bin'"),
    "unexpected folder": (dict(extra_members=[("other/notes.txt", b"hi")]),
                          r"unexpected member 'other/notes\.txt'"),
    "dotdot": (dict(extra_members=[("../evil", b"x")]), r"unsafe member path '\.\./evil'"),
    "nested dotdot": (dict(extra_members=[(f"{BIN_DIR}/../../evil", b"x")]),
                      r"unsafe member path '.*\.\./\.\./evil'"),
    "absolute": (dict(extra_members=[("/tmp/evil", b"x")]), r"unsafe member path '/tmp/evil'"),
    "symlink": (dict(extra_members=[link_member(f"{BIN_DIR}/data_batch_6.bin")]),
                r"'cifar-10-batches-bin/data_batch_6\.bin' .* is a symlink"),
    "hardlink": (dict(extra_members=[link_member("evil", f"{BIN_DIR}/test_batch.bin",
                                                 tarfile.LNKTYPE)]), r"'evil' .* is a hard link"),
    "missing member": (dict(omit=["data_batch_3"]),
                       r"missing cifar-10-batches-bin/data_batch_3\.bin"),
    "bad batch size": (dict(raw={"data_batch_2": bytes(3073 * 2 + 5)}),
                       r"data_batch_2\.bin .* truncated: 6151 bytes"),
    "empty batch": (dict(raw={"test_batch": b""}), r"test_batch\.bin .* truncated: 0 bytes"),
    "bad label": (dict(raw={"data_batch_4": bytes(record(3) + record(10))}),
                  r"data_batch_4\.bin .* label 10 at record 1"),
    "bad meta": (dict(include_meta=False,
                      extra_members=[(f"{BIN_DIR}/batches.meta.txt", b"a\nb\n\nc\n")]),
                 r"batches\.meta\.txt .* lists 3 class names"),
    "duplicate": (dict(extra_members=[(f"{BIN_DIR}/test_batch.bin", bytes(3073))]),
                  r"test_batch\.bin' appears twice"),
    "not an archive": (lambda p: p.write_bytes(b"just some text\n" * 100),
                       r"not a tar, tar\.gz or zip archive"),
}


@pytest.mark.parametrize("case", list(BAD_BINARY))
def test_bad_binary_archive_fails_cleanly(tmp_path, case):
    make, match = BAD_BINARY[case]
    archive = tmp_path / ARCHIVE
    if callable(make):
        make(archive)
    else:
        write_binary_archive(archive, records_per_batch=3, **make)
    assert_fails_cleanly(archive, match)


def test_missing_archive(tmp_path):
    with pytest.raises(CnnlabError, match="archive not found"):
        prepare_cifar10(tmp_path / "nope.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("fmt", ["tar.gz", "zip", "tar"])
def test_imagefolder_png_is_exact(tmp_path, fmt):
    archive = tmp_path / ARCHIVE
    expected = write_imagefolder_archive(
        archive, ["zebra", "ant", "cat"], {"train": 3, "test": 2}, fmt=fmt,
        extra_files={".DS_Store": b"junk", "train/cat/._0000.png": b"junk"})
    ds = read_cifar10_archive(archive)
    assert ds.classes == ("ant", "cat", "zebra")
    assert ds.split("train").labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.split("test").labels.tolist() == [0, 0, 1, 1, 2, 2]
    for split in ("train", "test"):
        np.testing.assert_array_equal(ds.split(split).images, expected[split][0])
        np.testing.assert_array_equal(ds.split(split).labels, expected[split][1])
    assert ds.source["format"] == "imagefolder" and ds.source["archive"] == ARCHIVE


def test_imagefolder_jpeg_in_top_folder_round_trip(tmp_path):
    archive = tmp_path / ARCHIVE
    expected = write_imagefolder_archive(archive, CLASSES, {"train": 2, "test": 1}, ext="jpg",
                                         top="cifar10", fmt="zip")
    prepare_cifar10(archive, tmp_path / "prepared")
    ds = load_prepared(tmp_path / "prepared")
    assert ds.classes == CLASSES and ds.source["format"] == "imagefolder"
    train = ds.split("train")
    assert train.images.shape == (20, 32, 32, 3) and len(ds.split("test")) == 10
    diff = np.abs(train.images.astype(int) - expected["train"][0].astype(int)).mean()
    assert diff < 8  # JPEG is lossy, but channels must not be swapped or images shuffled


def test_imagefolder_converts_bgr_to_rgb(tmp_path):
    archive = tmp_path / ARCHIVE
    bgr_red = np.zeros((32, 32, 3), np.uint8)
    bgr_red[..., 2] = 255  # red, as OpenCV stores it
    red_png = cv2.imencode(".png", bgr_red)[1].tobytes()
    write_imagefolder_archive(archive, ["a", "b"], replace={"train/a/0000.png": red_png})
    assert read_cifar10_archive(archive).split("train").images[0, 0, 0].tolist() == [255, 0, 0]


def _with_link(fmt):
    def make(path):
        write_imagefolder_archive(path, ["a", "b"], fmt=fmt)
        if fmt == "zip":
            with zipfile.ZipFile(path, "a") as zf:
                info = zipfile.ZipInfo("train/a/9999.png")
                info.external_attr = 0o120777 << 16  # symlink mode bits
                zf.writestr(info, "/etc/passwd")
        else:
            with tarfile.open(path, "a") as tf:
                tf.addfile(link_member("train/a/9999.png"))
    return make


BAD_IMAGEFOLDER = {
    "missing class in test": (dict(omit=["test/cat"]),
                              r"class 'cat' is in train/ but not in test/"),
    "class only in test": (dict(omit=["train/ant"]), r"class 'ant' is in test/ but not in train/"),
    "empty class": (dict(empty=["train/dog"]), r"class folder train/dog .* has no images"),
    "non-image": (dict(replace={"train/cat/0001.png": b"not an image at all"}),
                  r"'train/cat/0001\.png' .* not a decodable image"),
    "empty file": (dict(replace={"test/ant/0000.png": b""}),
                   r"'test/ant/0000\.png' .* not a decodable image"),
    "text file": (dict(extra_files={"train/cat/notes.txt": b"hello"}),
                  r"'train/cat/notes\.txt' .* not a decodable image"),
    "grayscale": (dict(replace={"test/dog/0000.png": np.zeros((32, 32), np.uint8)}),
                  r"'test/dog/0000\.png' .* grayscale \(shape \(32, 32\)\)"),
    "rgba": (dict(replace={"train/ant/0001.png": np.zeros((32, 32, 4), np.uint8)}),
             r"'train/ant/0001\.png' .* 4 channels"),
    "wrong size": (dict(replace={"train/ant/0002.png": np.zeros((16, 24, 3), np.uint8)}),
                   r"'train/ant/0002\.png' .* is 24x16, expected 32x32"),
    "file outside splits": (dict(extra_files={"README.txt": b"hi"}),
                            r"unexpected file 'README\.txt'"),
    "file too deep": (dict(extra_files={"train/cat/more/0000.png": b"x"}),
                      r"unexpected file 'train/cat/more/0000\.png'"),
    "file in split root": (dict(extra_files={"test/0000.png": b"x"}),
                           r"unexpected file 'test/0000\.png'"),
    "dotdot": (dict(extra_files={"train/../../evil.png": b"x"}, fmt="zip"),
               r"unsafe member path 'train/\.\./\.\./evil\.png'"),
    "absolute": (dict(extra_files={"/evil.png": b"x"}, fmt="zip"), r"unsafe member path '/evil"),
    "symlink in tar": (_with_link("tar"), r"'train/a/9999\.png' .* is a symlink"),
    "symlink in zip": (_with_link("zip"), r"'train/a/9999\.png' .* is a symlink"),
    "truncated zip": (lambda p: (write_imagefolder_archive(p, ["a", "b"], fmt="zip"),
                                 truncate(p, 0.6)), r"truncated or corrupt archive"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGEFOLDER))
def test_bad_imagefolder_archive_fails_cleanly(tmp_path, case):
    make, match = BAD_IMAGEFOLDER[case]
    archive = tmp_path / ARCHIVE
    if callable(make):
        make(archive)
    else:
        write_imagefolder_archive(archive, ["ant", "cat", "dog"], **make)
    assert_fails_cleanly(archive, match)


def test_encode_image_helper_round_trips():
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    decoded = cv2.imdecode(np.frombuffer(encode_image(image), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded[..., ::-1], image)


# ---------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_cifar10_jpeg_archive(tmp_path):
    if not os.environ.get("CNNLAB_DATASETS"):
        pytest.skip("CNNLAB_DATASETS is not set (point it at ../shared/datasets to run this)")
    archive = Path(os.environ["CNNLAB_DATASETS"]) / "cifar10-jpeg.tar.gz"
    assert archive.is_file(), f"{archive} is missing although CNNLAB_DATASETS is set"
    ds = prepare_cifar10(archive, tmp_path / "cifar10")
    assert ds.classes == CLASSES
    for split, total, per_class in (("train", 50_000, 5_000), ("test", 10_000, 1_000)):
        s = ds.split(split)
        assert s.images.shape == (total, 32, 32, 3) and s.images.dtype == np.uint8
        assert np.bincount(s.labels, minlength=10).tolist() == [per_class] * 10
    assert ds.source["format"] == "imagefolder"
    assert re.fullmatch(r"[0-9a-f]{32}", ds.source["md5"])
    loaded = load_prepared(tmp_path / "cifar10")
    assert loaded.classes == CLASSES and loaded.source == ds.source
    for split in ("train", "test"):
        np.testing.assert_array_equal(loaded.split(split).images, ds.split(split).images)
        np.testing.assert_array_equal(loaded.split(split).labels, ds.split(split).labels)
