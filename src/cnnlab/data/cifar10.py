"""Read a CIFAR-10 archive into the prepared format, streaming from the archive with no extraction.

Two layouts are accepted, told apart by the archive's content (the download stage stores it under a
fixed name, so the file name says nothing):

* the official binary version (cifar-10-binary.tar.gz): `cifar-10-batches-bin/data_batch_{1..5}.bin`
  and `test_batch.bin`, each a run of 3,073-byte records (a label byte, then the 1,024 red, 1,024
  green and 1,024 blue bytes of a 32x32 image, each plane row-major), read with NumPy, never pickle.
* an ImageFolder archive (.tar, .tar.gz or .zip): `train/<class>/<file>` and `test/<class>/<file>`,
  optionally inside one top-level folder. Class indices follow the sorted class names, which for
  CIFAR-10 is the official order.

Anything unexpected (unsafe or unknown member paths, links, truncated data, undecodable or odd-sized
images) is a one-line CnnlabError, raised before anything is written.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnnlab import paths
from cnnlab.data.prepared import PreparedDataset, Split, save_prepared
from cnnlab.errors import CnnlabError

NAME = "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")

BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"  # the python version: pickled batches, never read
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META_TXT = "batches.meta.txt"
OPTIONAL_MEMBERS = (META_TXT, "readme.html")
RECORD_BYTES = 1 + 3 * 32 * 32
SPLITS = ("train", "test")

_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class _Member:
    name: str  # as stored in the archive
    parts: tuple[str, ...]  # path components, without "." components
    is_dir: bool
    data: bytes = b""


# ----------------------------------------------------------------------------------------- API


def read_cifar10_archive(path: str | os.PathLike) -> PreparedDataset:
    """Read a CIFAR-10 archive (official binary or ImageFolder) into a PreparedDataset."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"CIFAR-10 archive not found: {path}")
    container = _sniff(path)
    try:
        members = _read_zip(path) if container == "zip" else _read_tar(path)
    except _CORRUPT as exc:
        raise CnnlabError(f"truncated or corrupt archive {path}: {exc}") from exc
    if any(m.parts[0] == PY_DIR for m in members):
        # Unpickling downloaded data would run whatever code it names: refuse it by name.
        raise CnnlabError(f"{path} is CIFAR-10's python version (pickled batches), which cnnlab "
                          f"does not unpickle; use the binary version (cifar-10-binary.tar.gz) "
                          f"or an ImageFolder archive")
    if any(m.parts[0] == BIN_DIR for m in members):
        fmt = "cifar-binary"
        classes, splits = _parse_binary(path, members)
    else:
        fmt = "imagefolder"
        classes, splits = _parse_imagefolder(path, members)
    source = {"archive": path.name, "format": fmt, "md5": _md5(path)}
    return PreparedDataset(NAME, classes, splits, source)


def prepare_cifar10(archive: str | os.PathLike, out_dir: str | os.PathLike) -> PreparedDataset:
    """Read `archive` and write it to `out_dir` in the prepared format (atomically)."""
    dataset = read_cifar10_archive(archive)
    save_prepared(dataset, out_dir)
    return dataset


# ------------------------------------------------------------------------ reading the container


def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise CnnlabError(f"cannot read CIFAR-10 archive {path}: {exc}") from exc
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip (or an empty one)
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"  # compressed; tarfile's r:* tells which
    if head[257:262] == b"ustar":
        return "tar"
    raise CnnlabError(f"{path} is not a tar, tar.gz or zip archive (unrecognised content)")


def _check_path(archive: Path, name: str) -> tuple[str, ...]:
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise CnnlabError(f"unsafe member path {name!r} in {archive} "
                          f"(absolute paths and '..' are not allowed)")
    if not parts:
        raise CnnlabError(f"member with an empty name in {archive}")
    return parts


def _add(archive: Path, members: dict[str, _Member], member: _Member) -> None:
    key = "/".join(member.parts)
    if key in members and not (member.is_dir and members[key].is_dir):
        raise CnnlabError(f"member {member.name!r} appears twice in {archive}")
    members[key] = member


def _read_tar(path: Path) -> list[_Member]:
    members: dict[str, _Member] = {}
    with tarfile.open(path, mode="r:*") as tf:
        for info in tf:
            parts = _check_path(path, info.name)
            if info.isdir():
                _add(path, members, _Member(info.name, parts, True))
            elif info.isreg():
                f = tf.extractfile(info)
                assert f is not None  # regular members always have a file object
                _add(path, members, _Member(info.name, parts, False, f.read()))
            else:
                kind = ("symlink" if info.issym() else "hard link" if info.islnk()
                        else "device or special file")
                raise CnnlabError(f"member {info.name!r} in {path} is a {kind}; "
                                  f"only regular files and folders are allowed")
    return list(members.values())


def _read_zip(path: Path) -> list[_Member]:
    members: dict[str, _Member] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            parts = _check_path(path, info.filename)
            ftype = stat.S_IFMT(info.external_attr >> 16)  # Unix file type; 0 when not recorded
            if info.is_dir():
                _add(path, members, _Member(info.filename, parts, True))
            elif ftype not in (0, stat.S_IFREG):
                kind = "symlink" if ftype == stat.S_IFLNK else "special file"
                raise CnnlabError(f"member {info.filename!r} in {path} is a {kind}; "
                                  f"only regular files and folders are allowed")
            else:
                _add(path, members, _Member(info.filename, parts, False, zf.read(info)))
    return list(members.values())


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- official binary


def _parse_binary(path: Path, members: list[_Member]) -> tuple[tuple[str, ...], dict[str, Split]]:
    allowed = set(TRAIN_BATCHES) | {TEST_BATCH} | set(OPTIONAL_MEMBERS)
    files: dict[str, bytes] = {}
    for m in members:
        ok_dir = m.is_dir and m.parts == (BIN_DIR,)
        ok_file = not m.is_dir and len(m.parts) == 2 and m.parts[0] == BIN_DIR \
            and m.parts[1] in allowed
        if not (ok_dir or ok_file):
            raise CnnlabError(f"unexpected member {m.name!r} in CIFAR-10 binary archive {path} "
                              f"(expected only {BIN_DIR}/data_batch_1..5.bin, {TEST_BATCH}, "
                              f"{META_TXT}, readme.html)")
        if ok_file:
            files[m.parts[1]] = m.data
    for required in (*TRAIN_BATCHES, TEST_BATCH):
        if required not in files:
            raise CnnlabError(f"CIFAR-10 binary archive {path} is missing {BIN_DIR}/{required}")

    classes = CLASSES
    if META_TXT in files:
        try:
            text = files[META_TXT].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CnnlabError(f"{BIN_DIR}/{META_TXT} in {path} is not text: {exc}") from exc
        classes = tuple(line.strip() for line in text.splitlines() if line.strip())
        if len(classes) != 10:
            raise CnnlabError(f"{BIN_DIR}/{META_TXT} in {path} lists {len(classes)} class "
                              f"names, CIFAR-10 has 10")

    train = [_decode_batch(path, name, files[name]) for name in TRAIN_BATCHES]
    splits = {
        "train": Split(np.concatenate([images for images, _ in train]),
                       np.concatenate([labels for _, labels in train])),
        "test": Split(*_decode_batch(path, TEST_BATCH, files[TEST_BATCH])),
    }
    return classes, splits


def _decode_batch(path: Path, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    if not data or len(data) % RECORD_BYTES:
        raise CnnlabError(f"{BIN_DIR}/{name} in {path} is truncated: {len(data)} bytes is not a "
                          f"positive multiple of the {RECORD_BYTES}-byte record")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise CnnlabError(f"{BIN_DIR}/{name} in {path} has label {labels[bad[0]]} at record "
                          f"{bad[0]} (CIFAR-10 labels are 0..9)")
    # (N, 3, 32, 32) planes -> (N, 32, 32, 3) RGB, made contiguous.
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


# -------------------------------------------------------------------------------- ImageFolder


def _parse_imagefolder(path: Path, members: list[_Member]
                       ) -> tuple[tuple[str, ...], dict[str, Split]]:
    # Hidden files (.DS_Store, macOS ._* resource forks) are skipped; folders only name classes.
    visible = [m for m in members if not any(p.startswith(".") for p in m.parts)]
    files = [m for m in visible if not m.is_dir]
    if not files:
        raise CnnlabError(f"archive {path} holds no files (expected train/<class>/<file> and "
                          f"test/<class>/<file>, or the official CIFAR-10 binary version)")
    prefix = 0  # leading components to strip: one common top-level folder is allowed
    tops = {m.parts[0] for m in files}
    if not tops & set(SPLITS) and len(tops) == 1:
        prefix = 1

    found: dict[tuple[str, str], list[tuple[str, _Member]]] = {}
    for m in visible:
        parts = m.parts[prefix:]
        if m.is_dir:
            if len(parts) == 2 and parts[0] in SPLITS:
                found.setdefault((parts[0], parts[1]), [])
            continue
        if len(parts) != 3 or parts[0] not in SPLITS:
            raise CnnlabError(f"unexpected file {m.name!r} in {path}: files must be "
                              f"train/<class>/<file> or test/<class>/<file> (optionally inside "
                              f"one top-level folder)")
        found.setdefault((parts[0], parts[1]), []).append((parts[2], m))

    per_split = {s: {c for (split, c) in found if split == s} for s in SPLITS}
    for split in SPLITS:
        if not per_split[split]:
            raise CnnlabError(f"archive {path} has no {split}/ class folders")
    for split, other in (("train", "test"), ("test", "train")):
        for cls in sorted(per_split[split] - per_split[other]):
            raise CnnlabError(f"class {cls!r} is in {split}/ but not in {other}/ in {path}")
    classes = tuple(sorted(per_split["train"]))
    for split in SPLITS:
        for cls in classes:
            if not found[(split, cls)]:
                raise CnnlabError(f"class folder {split}/{cls} in {path} has no images")

    decoded: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {}
    for split in SPLITS:
        images, labels, names = [], [], []
        for index, cls in enumerate(classes):
            for _, m in sorted(found[(split, cls)], key=lambda item: item[0]):
                images.append(_decode_image(path, m))
                labels.append(index)
                names.append(m.name)
        decoded[split] = (images, labels, names)

    shapes = Counter(img.shape for images, _, _ in decoded.values() for img in images)
    expected = shapes.most_common(1)[0][0]
    splits = {}
    for split, (images, labels, names) in decoded.items():
        for img, name in zip(images, names, strict=True):
            if img.shape != expected:
                raise CnnlabError(f"image {name!r} in {path} is {img.shape[1]}x{img.shape[0]}, "
                                  f"expected {expected[1]}x{expected[0]} like the others")
        bgr = np.stack(images)
        splits[split] = Split(np.ascontiguousarray(bgr[..., ::-1]), np.array(labels, np.int64))
    return classes, splits


def _decode_image(path: Path, m: _Member) -> np.ndarray:
    img = None
    if m.data:
        try:
            img = cv2.imdecode(np.frombuffer(m.data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            img = None
    if img is None:
        raise CnnlabError(f"{m.name!r} in {path} is not a decodable image")
    if img.ndim == 2 or img.shape[2] != 3:
        mode = "grayscale" if img.ndim == 2 or img.shape[2] == 1 else f"{img.shape[2]} channels"
        raise CnnlabError(f"image {m.name!r} in {path} is {mode} (shape {img.shape}); "
                          f"expected 3-channel colour")
    if img.dtype != np.uint8:
        raise CnnlabError(f"image {m.name!r} in {path} has {img.dtype} pixels; expected 8-bit")
    return img


def prepare_raw_cifar10() -> PreparedDataset:
    """The prepare_cifar10 stage: data/raw/cifar10.archive -> data/prepared/cifar10/."""
    archive = paths.raw_archive("cifar10")
    if not archive.is_file():
        raise CnnlabError(f"{archive} not found (run `dvc repro download_cifar10` first)")
    dataset = prepare_cifar10(archive, paths.prepared_dir("cifar10"))
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    print(f"prepared cifar10: {sizes} images, {len(dataset.classes)} classes")
    return dataset
