"""Build the COCO 5-class 64x64 dataset (study 002): fetch only the selected images, resize, save.

`build_coco5` selects the images with cnnlab.data.coco5, fetches them with a bounded pool of
`cfg.workers` threads (each fetch is cnnlab.download.download, so http(s)/file URLs, retries with
backoff and atomic writes come from one place), decodes and checks each one, resizes it to
image_size x image_size (cfg.interpolation; with cfg.jpeg_quality set, the resized image then goes
through a PIL JPEG save and decode, as study 002's saved files did) and writes two outputs
atomically:

* `prepared_dir`: the prepared arrays (cnnlab.data.prepared), splits "train" and "val", labels in
  cfg.classes order; images ordered by class, then by their position in the selection.
* `browse_dir`: `<split>/<class>/<image_id>.jpg` (the 64x64 images), `manifest.csv` (one row per
  image) and `sample_grid.png` (a row of samples per class), for looking at the data.

Image source (cfg.image_source): None fetches each record's `coco_url`; an http(s):// or file://
URL replaces coco_url's "http://images.cocodataset.org/" base, i.e. base + "<split>/<file_name>";
anything else is a local folder in the official layout (`<split>/<file_name>`), read in place.
Fetched images are kept in `cache_dir/<split>/<file_name>`: a re-run (after a kill, a crash or a
network failure) fetches only what is not there yet, and still decodes and checks every image.

Which failures replace an image, and which stop the build:
* The image is bad (HTTP 404/410, a file missing from a local folder or file:// source, bytes that
  do not decode, a JPEG without its end marker, or pixels whose size disagrees with the record):
  it is replaced by the next unused spare of its class and counted in meta.json and the manifest.
  A cached file that fails the check is fetched once more before the image counts as bad.
* Anything else stops the build with a one-line error naming the URL: connection failures, time
  outs, and HTTP 5xx/429 that persist after cfg.retries retries, or any other 4xx (403 and the like
  say the host refuses us, not that the image is gone). Replacing those would quietly swap
  thousands of good images for spares while the host is down; a re-run resumes from the cache.
* If more than half the images tried turn out bad (and at least MIN_BAD_TO_STOP), the source itself
  is wrong (e.g. an image_source base that 404s everything): the build stops rather than eat the
  spares.
Replacements never depend on fetch timing: images are fetched in waves (first the selection,
then the replacements of the wave before), and each wave's failures are resolved in class order,
then position order, after the whole wave is in. The result of any run therefore equals that of an
uninterrupted run, however the fetches interleave or wherever an earlier run was killed.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import Coco5Config, Params
from cnnlab.data.coco5 import SPLITS, Coco5Selection, load_annotations, select_images
from cnnlab.data.prepared import PreparedDataset, Split, save_prepared
from cnnlab.download import download
from cnnlab.errors import CnnlabError

__all__ = ["build_coco5", "build_coco5_stage"]

NAME = "coco5"
COCO_BASE = "http://images.cocodataset.org/"
BACKOFF = 1.0  # seconds before an image's first retry, doubling after each (download's backoff)
TIMEOUT = 30.0  # per connect and per read of one image
MAX_BAD_FRACTION = 0.5  # more bad images than this, among those tried, means the source is wrong
MIN_BAD_TO_STOP = 10  # ... once at least this many are bad (a few 404s in a tiny run are fine)
GRID_COLUMNS = 8
JPEG_QUALITY = 95  # of the browsable copies only, never of the arrays
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}  # data.coco5.interpolation
MANIFEST_FIELDS = ("image_id", "class", "label", "split", "source_url", "original_width",
                   "original_height", "replacement", "replaces")

_CV2_NAMES = {"area": "INTER_AREA", "linear": "INTER_LINEAR"}

# download()'s one-line errors that mean "this image is gone", as opposed to "the source failed".
_GONE = re.compile(r"^(HTTP (404|410) |source not found: )")
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"

log = logging.getLogger(__name__)


class _BadImage(Exception):
    """This one image cannot be used; str() is the one-line reason."""


@dataclass(frozen=True)
class _Job:
    label: int  # class index
    position: int  # slot in the class's selection (train first)
    image_id: int
    replaces: int | None  # the image this one stands in for


@dataclass(frozen=True)
class _Image:
    pixels: np.ndarray  # (size, size, 3) uint8 RGB
    width: int  # of the decoded original
    height: int
    url: str


# ----------------------------------------------------------------------------------------- API


def build_coco5(
    cfg: Coco5Config,
    annotations_json: str | Path,
    prepared_dir: str | Path,
    browse_dir: str | Path,
    cache_dir: str | Path,
    progress: bool = True,
) -> PreparedDataset:
    """Select, fetch, check and resize the COCO 5-class images; write both outputs atomically."""
    annotations_json, cache_dir = Path(annotations_json), Path(cache_dir)
    coco = load_annotations(annotations_json)
    selection = select_images(coco, cfg, label=str(annotations_json))
    locate = _Locator(cfg, coco.imgs, cache_dir)

    slots, unusable = _fetch_all(cfg, selection, locate, progress)
    dataset, rows = _assemble(cfg, selection, slots, annotations_json, unusable)
    with atomic_dir(browse_dir) as tmp:
        _write_browse(tmp, dataset, rows)
        # Inside the browse block: if the arrays cannot be written, no browse folder appears.
        save_prepared(dataset, prepared_dir)
    return dataset


def _fetch_all(cfg: Coco5Config, selection, locate: _Locator, progress: bool
               ) -> tuple[list[list[tuple[_Image, _Job] | None]], list[dict]]:
    """Fetch every picked image, replacing each unusable one by its class's next spare, in
    waves; the filled slots (class, position) and the images found unusable."""
    slots: list[list[tuple[_Image, _Job] | None]] = [[None] * len(ids)
                                                     for ids in selection.picked]
    jobs = [_Job(label, pos, image_id, None) for label, ids in enumerate(selection.picked)
            for pos, image_id in enumerate(ids)]
    used = {image_id for ids in selection.picked for image_id in ids}
    spares = [list(reversed(s)) for s in selection.spares]  # pop() takes the next one
    tried = bad = 0
    unusable: list[dict] = []
    with tqdm(total=len(jobs), desc="coco5 images", unit="img", disable=not progress) as bar:
        pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="coco5")
        try:
            while jobs:
                pairs = list(zip(jobs, _run_wave(pool, jobs, locate.load, bar), strict=True))
                failed = [(job, r) for job, r in pairs if isinstance(r, _BadImage)]
                tried, bad = tried + len(jobs), bad + len(failed)
                _check_source(failed, bad, tried)
                for job, result in pairs:
                    if isinstance(result, _Image):
                        slots[job.label][job.position] = (result, job)
                jobs = _replacements(cfg, failed, spares, used, unusable, progress)
                bar.total += len(jobs)
                bar.refresh()
        except BaseException:
            # Do not wait for fetches in flight (up to retries x timeout on a stuck host): they
            # can only finish writing whole files into the cache.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return slots, unusable


def _check_source(failed: list, bad: int, tried: int) -> None:
    """Too many unusable images mean a wrong source, not bad images: stop with one line."""
    if failed and bad >= MIN_BAD_TO_STOP and bad > MAX_BAD_FRACTION * tried:
        job, reason = failed[0]
        raise CnnlabError(
            f"{bad} of {tried} COCO images could not be used (e.g. image "
            f"{job.image_id}: {reason}); the image source looks wrong, not the "
            f"images: check data.coco5.image_source")


def _replacements(cfg: Coco5Config, failed: list, spares: list[list[int]], used: set[int],
                  unusable: list[dict], progress: bool) -> list[_Job]:
    """The next wave: a spare of the same class for each failed job. Jobs are in (class,
    position) order, so replacements do not depend on timing."""
    next_jobs = []
    for job, reason in failed:
        name = cfg.classes[job.label]
        unusable.append({"image_id": job.image_id, "class": name})
        spare = _next_spare(spares[job.label], used)
        _say(f"coco5: image {job.image_id} ({name}) unusable: {reason}; "
             + (f"replaced by {spare}" if spare is not None else "no spare left"), progress)
        if spare is not None:
            next_jobs.append(_Job(job.label, job.position, spare, job.image_id))
        elif not cfg.allow_shortfall:
            raise CnnlabError(
                f"class {name!r}: no spare image left to replace unusable image "
                f"{job.image_id} ({reason}); set data.coco5.allow_shortfall: true "
                f"to take what there is")
    return next_jobs


# ------------------------------------------------------------------------------------ fetching


class _Locator:
    """Where each image comes from, and how one image is fetched (or read), checked and resized."""

    def __init__(self, cfg: Coco5Config, records: dict, cache_dir: Path) -> None:
        self.cfg = cfg
        self.records = records
        self.cache = cache_dir / cfg.source_split
        source = cfg.image_source
        self.folder: Path | None = None
        self.base: str | None = None
        if source is not None:
            scheme = urllib.parse.urlsplit(source).scheme.lower()
            if scheme in ("http", "https", "file"):
                self.base = source.rstrip("/") + "/"
            else:
                self.folder = Path(source) / cfg.source_split
                if not self.folder.is_dir():
                    raise CnnlabError(f"image_source folder has no {cfg.source_split}/ "
                                      f"subfolder: {Path(source)}")
        if self.folder is None:
            self.cache.mkdir(parents=True, exist_ok=True)
            # A killed run can leave atomic_path temporaries (".<name>.<random>.tmp"); no other
            # run writes this cache at the same time, so they are junk.
            for stale in self.cache.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def url(self, record: dict) -> str:
        name = _file_name(record)
        if self.folder is not None:
            return str(self.folder / name)
        if self.base is not None:
            return f"{self.base}{self.cfg.source_split}/{urllib.parse.quote(name)}"
        url = record.get("coco_url")
        if not isinstance(url, str) or not url:
            raise CnnlabError(f"COCO image {record.get('id')} has no coco_url; set "
                              f"data.coco5.image_source")
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            # The URL comes from downloaded annotations: it may not reach into local files.
            raise CnnlabError(f"COCO image {record.get('id')} has coco_url {url!r}: only http(s) "
                              f"URLs are fetched from the annotations")
        return url

    def load(self, job: _Job) -> _Image:
        """Fetch (or find in the cache), decode, check and resize one image."""
        record = self.records[job.image_id]
        url = self.url(record)
        if self.folder is not None:
            path = Path(url)
            if not path.is_file():
                raise _BadImage(f"not found: {path}")
            return self._decode(path.read_bytes(), record, url)  # never delete the user's file

        path = self.cache / _file_name(record)
        if path.is_file():
            try:
                return self._decode(path.read_bytes(), record, url)
            except _BadImage:
                path.unlink(missing_ok=True)  # damaged on disk: fetch it once more
        self._fetch(url, path, job.image_id)
        try:
            return self._decode(path.read_bytes(), record, url)
        except _BadImage:
            path.unlink(missing_ok=True)  # a bad file must not count as cached next run
            raise

    def _fetch(self, url: str, path: Path, image_id: int) -> None:
        try:
            download(url, path, None, retries=self.cfg.retries, backoff=BACKOFF, timeout=TIMEOUT,
                     progress=False)
        except CnnlabError as exc:
            if _GONE.match(str(exc)):
                raise _BadImage(str(exc)) from None
            raise CnnlabError(f"COCO image {image_id}: {exc} (a re-run resumes; fetched images "
                              f"stay in {self.cache})") from None

    def _decode(self, data: bytes, record: dict, url: str) -> _Image:
        # A JPEG cut short still decodes (libjpeg fills the rest with grey), so look for its end
        # marker; the entropy-coded data cannot contain FF D9, so a truncated file has none near
        # its end.
        if data[:2] == _JPEG_SOI and data.rfind(_JPEG_EOI, max(0, len(data) - 64)) < 0:
            raise _BadImage("truncated JPEG (no end-of-image marker)")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise _BadImage(f"not a decodable image ({len(data)} bytes)")
        height, width = bgr.shape[:2]
        want = (record.get("width"), record.get("height"))
        # IMREAD_COLOR applies EXIF orientation, which can swap the record's width and height.
        if want not in ((width, height), (height, width)):
            raise _BadImage(f"decoded {width}x{height}, the record says {want[0]}x{want[1]}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        pixels = resize_image(rgb, self.cfg.image_size, self.cfg.interpolation)
        if self.cfg.jpeg_quality is not None:
            pixels = jpeg_round_trip(pixels, self.cfg.jpeg_quality)
        return _Image(np.ascontiguousarray(pixels), width, height, url)


def resize_image(rgb: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """The whole image (no crop: the scene stays, the aspect changes) resized to size x size.
    area (INTER_AREA) averages all source pixels under each output pixel, the right filter for
    shrinking (~640 -> 64); linear (INTER_LINEAR, cv2.resize's default, study 002's) samples a
    2x2 neighbourhood and aliases (moire, jagged edges) at that ratio."""
    return cv2.resize(rgb, (size, size), interpolation=INTERPOLATIONS[interpolation])


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """`rgb` saved as a JPEG by PIL at `quality` (PIL's other defaults, 4:2:0 chroma) and decoded
    back by PIL: what study 002 trained on after saving each image as .jpg (quality 75)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"))


def _run_wave(pool: ThreadPoolExecutor, jobs: Sequence[_Job], load: Callable[[_Job], _Image],
              bar: tqdm) -> list[_Image | _BadImage]:
    """Run `load` on every job with the pool; results in job order. Other errors propagate."""
    futures = {pool.submit(load, job): i for i, job in enumerate(jobs)}
    results: list[_Image | _BadImage | None] = [None] * len(jobs)
    try:
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except _BadImage as exc:
                results[futures[future]] = exc
            bar.update(1)
    except BaseException:
        for future in futures:
            future.cancel()  # queued fetches never start; running ones finish (bounded)
        raise
    return results  # type: ignore[return-value]


def _next_spare(spares: list[int], used: set[int]) -> int | None:
    while spares:
        image_id = spares.pop()
        if image_id not in used:
            used.add(image_id)
            return image_id
    return None


def _file_name(record: dict) -> str:
    name = record.get("file_name")
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name):
        raise CnnlabError(f"COCO image {record.get('id')} has an unusable file_name {name!r}")
    return name


def _say(message: str, progress: bool) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)  # keeps the progress bar intact
    else:
        log.warning(message)


# -------------------------------------------------------------------------------------- output


def _assemble(cfg: Coco5Config, selection: Coco5Selection,
              slots: list[list[tuple[_Image, _Job] | None]], annotations_json: Path,
              unusable: list[dict]) -> tuple[PreparedDataset, list[dict]]:
    """Arrays and manifest rows: per class, the kept images in slot order, train first."""
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    rows: list[dict] = []
    for label, class_slots in enumerate(slots):
        kept = [slot for slot in class_slots if slot is not None]
        for position, (image, job) in enumerate(kept):
            split = selection.split_of(position)
            images[split].append(image.pixels)
            labels[split].append(label)
            rows.append({
                "image_id": job.image_id, "class": cfg.classes[label], "label": label,
                "split": split, "source_url": image.url, "original_width": image.width,
                "original_height": image.height, "replacement": job.replaces is not None,
                "replaces": "" if job.replaces is None else job.replaces,
                "_pixels": image.pixels,
            })
    size = cfg.image_size
    splits = {
        s: Split(np.stack(images[s]) if images[s] else np.zeros((0, size, size, 3), np.uint8),
                 np.asarray(labels[s], dtype=np.int64))
        for s in SPLITS
    }
    counts = {s: {name: int((splits[s].labels == i).sum()) for i, name in enumerate(cfg.classes)}
              for s in SPLITS}
    asked = selection.asked
    shortfalls = {name: asked - sum(counts[s][name] for s in SPLITS) for name in cfg.classes}
    source = {
        "annotations": annotations_json.name,
        "source_split": cfg.source_split,
        "image_source": cfg.image_source or "coco_url",
        "selection": cfg.selection,
        "seed": cfg.seed,
        "exclusive": cfg.exclusive,
        "image_size": size,
        "resize": f"cv2.{_CV2_NAMES[cfg.interpolation]}, whole image (no crop), RGB",
        "jpeg_quality": cfg.jpeg_quality,
        "asked_per_class": {"train": cfg.train_per_class, "val": cfg.val_per_class},
        "counts": counts,
        "eligible": dict(zip(cfg.classes, selection.eligible, strict=True)),
        "replaced": sum(1 for r in rows if r["replacement"]),
        "unusable": unusable,
        "shortfalls": {name: n for name, n in shortfalls.items() if n > 0},
    }
    return PreparedDataset(NAME, tuple(cfg.classes), splits, source), rows


def _write_browse(root: Path, dataset: PreparedDataset, rows: list[dict]) -> None:
    for row in rows:
        folder = root / row["split"] / row["class"]
        folder.mkdir(parents=True, exist_ok=True)
        # 4:4:4: at 64x64, the default 4:2:0 chroma subsampling would visibly smear colour.
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(row["_pixels"], cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY,
                                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
        if not ok:
            raise CnnlabError(f"could not encode image {row['image_id']} as JPEG")
        (folder / f"{row['image_id']}.jpg").write_bytes(data.tobytes())
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "replacement": str(row["replacement"]).lower()})
    _sample_grid(dataset, root / "sample_grid.png")


def _sample_grid(dataset: PreparedDataset, path: Path) -> None:
    """One row per class, labelled with its name: its first GRID_COLUMNS images (train first)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(dataset.classes)
    fig = Figure(figsize=(1.3 + 1.1 * GRID_COLUMNS, 0.7 + 1.1 * n))
    FigureCanvasAgg(fig)  # Agg directly: no display, no pyplot state shared across threads
    axes = fig.subplots(n, GRID_COLUMNS, squeeze=False)
    size = next(iter(dataset.splits.values())).images.shape[1]
    for label, name in enumerate(dataset.classes):
        samples = [split.images[split.labels == label] for split in dataset.splits.values()]
        samples = np.concatenate(samples)[:GRID_COLUMNS]
        for col, ax in enumerate(axes[label]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(samples):
                ax.imshow(samples[col], interpolation="nearest")
        axes[label][0].set_ylabel(f"{name}\n({label})", rotation=0, ha="right", va="center",
                                  fontsize=12, labelpad=10)
    fig.suptitle(f"{dataset.name}: first {GRID_COLUMNS} images per class ({size}x{size})",
                 fontsize=13)
    fig.subplots_adjust(left=0.14, right=0.99, bottom=0.02, top=1 - 0.5 / (0.7 + 1.1 * n),
                        wspace=0.05, hspace=0.08)
    fig.savefig(path, format="png", dpi=100)


def build_coco5_stage(params: Params) -> PreparedDataset:
    """The build_coco5 stage: data/raw/coco_instances.json -> data/prepared/coco5/ (and the
    browsable JPEGs in data/coco5/)."""
    instances = paths.coco_instances()
    if not instances.is_file():
        raise CnnlabError(f"{instances} not found (run `dvc repro download_coco` first)")
    dataset = build_coco5(params.data.coco5, instances, paths.prepared_dir("coco5"),
                          paths.coco_browse_dir(), paths.coco_image_cache())
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    print(f"built coco5: {sizes} images, classes {', '.join(dataset.classes)}")
    return dataset
