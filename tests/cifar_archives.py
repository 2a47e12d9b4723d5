"""Small generated CIFAR-10 archives for tests: the official binary layout and ImageFolder layouts.

Test modules import these by plain name (`from cifar_archives import write_binary_archive`).
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
BIN_DIR = "cifar-10-batches-bin"
BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def encode_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Official record format: label byte, then the R, G and B planes (each 32x32 row-major)."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes | None) -> None:
    """Add a regular file (data given) or a folder (data None)."""
    info = tarfile.TarInfo(name)
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tf.addfile(info, io.BytesIO(data))


def write_binary_archive(path, records_per_batch: int = 20, seed: int = 0, *,
                         extra_members: Iterable[tarfile.TarInfo | tuple[str, bytes]] | None = None,
                         omit: Iterable[str] | None = None, include_meta: bool = True,
                         raw: Mapping[str, bytes] | None = None, reverse: bool = False) -> dict:
    """Write a gzip tar like cifar-10-binary.tar.gz with random images and labels.

    omit: batch names ("data_batch_3") to leave out; raw: batch name -> bytes written instead of the
    generated records; extra_members: (name, bytes) files or ready TarInfo objects (links) appended
    as given; reverse: write the batches in reverse order. Returns {"train": (images, labels),
    "test": (images, labels)}: what was generated (images NHWC uint8 RGB, labels int64), train being
    data_batch_1..5 concatenated in order.
    """
    rng = np.random.default_rng(seed)
    omit, raw = set(omit or ()), dict(raw or {})
    generated = {}
    for name in BATCHES:
        images = rng.integers(0, 256, (records_per_batch, 32, 32, 3), dtype=np.uint8)
        generated[name] = (images, rng.integers(0, 10, records_per_batch).astype(np.int64))
    with tarfile.open(path, "w:gz") as tf:
        _tar_add(tf, BIN_DIR, None)
        if include_meta:
            _tar_add(tf, f"{BIN_DIR}/batches.meta.txt", ("\n".join(CLASSES) + "\n\n").encode())
        for name in reversed(BATCHES) if reverse else BATCHES:
            if name not in omit:
                data = raw[name] if name in raw else encode_records(*generated[name])
                _tar_add(tf, f"{BIN_DIR}/{name}.bin", data)
        for extra in extra_members or ():
            if isinstance(extra, tarfile.TarInfo):
                tf.addfile(extra)
            else:
                _tar_add(tf, *extra)
    train = [generated[name] for name in BATCHES[:5]]
    return {"train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
            "test": generated["test_batch"]}


def link_member(name: str, target: str = "/etc/passwd", kind: bytes = tarfile.SYMTYPE
                ) -> tarfile.TarInfo:
    """A symlink (or, with kind=tarfile.LNKTYPE, hard link) member for extra_members."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def encode_image(image: np.ndarray, ext: str = "png") -> bytes:
    """Encode an RGB (H, W, 3) or grayscale (H, W) uint8 array as PNG or JPEG bytes."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[..., ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(f".{ext}", np.ascontiguousarray(image))
    assert ok
    return buf.tobytes()


def write_imagefolder_archive(path, classes: Iterable[str] = CLASSES,
                              per_class: Mapping[str, int] | None = None, size: int = 32,
                              fmt: str = "tar.gz", *, ext: str = "png", seed: int = 0,
                              top: str = "", omit: Iterable[str] = (), empty: Iterable[str] = (),
                              replace: Mapping[str, np.ndarray | bytes] | None = None,
                              extra_files: Mapping[str, bytes] | None = None) -> dict:
    """Write train/<class>/NNNN.<ext> and test/<class>/NNNN.<ext> as tar.gz, tar or zip.

    per_class: images per class and split (default train 3, test 2); top: a folder wrapping it all;
    omit: "split/class" folders left out entirely; empty: "split/class" folders written with no
    images; replace: "split/class/NNNN.ext" -> an array (encoded as ext, e.g. grayscale or another
    size) or raw bytes written instead of the generated image; extra_files: name -> bytes files.
    Returns {split: (images, labels)} as generated, classes indexed in sorted order, files in name
    order (what a reader should produce for PNG; JPEG is lossy).
    """
    per_class = dict(per_class or {"train": 3, "test": 2})
    classes = sorted(classes)
    omit, empty, replace = set(omit), set(empty), dict(replace or {})
    rng = np.random.default_rng(seed)
    entries: list[tuple[str, bytes | None]] = []  # (name, data), data None for folders
    result = {}
    for split in ("train", "test"):
        entries.append((f"{split}/", None))
        images, labels = [], []
        for index, cls in enumerate(classes):
            folder = f"{split}/{cls}"
            if folder in omit:
                continue
            entries.append((f"{folder}/", None))
            for i in range(0 if folder in empty else per_class[split]):
                # Smooth-ish images so JPEG keeps them close: a random colour plus mild noise.
                image = (rng.integers(40, 216, 3) + rng.integers(-20, 21, (size, size, 3)))
                image = image.clip(0, 255).astype(np.uint8)
                name = f"{folder}/{i:04d}.{ext}"
                data = replace.get(name, image)
                entries.append((name, data if isinstance(data, bytes) else encode_image(data, ext)))
                images.append(image)
                labels.append(index)
        result[split] = (np.array(images, np.uint8).reshape(-1, size, size, 3),
                         np.array(labels, np.int64))
    entries += list((extra_files or {}).items())
    if top:
        entries = [(f"{top}/", None)] + [(f"{top}/{name}", data) for name, data in entries]

    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, b"" if data is None else data)
    else:
        with tarfile.open(path, {"tar.gz": "w:gz", "tar": "w"}[fmt]) as tf:
            for name, data in entries:
                _tar_add(tf, name.rstrip("/"), data)
    return result


def truncate(path, fraction: float = 0.5) -> None:
    """Cut a file to `fraction` of its size, like an interrupted download."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
