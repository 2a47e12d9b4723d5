"""Benchmark the COCO 5-class selection and build. Run from the project root:

    .venv/bin/python benchmarks/coco_build.py

(a) Selection on a generated 100,000-image COCO annotation file (tests/coco_fixtures.py: real
    category ids, the five classes at train2017's rates with realistic overlap): JSON load, the
    pycocotools index, and the selection itself (1,600 train + 400 val per class), timed apart.
(b) Build throughput in images/s: ~640x480 generated JPEGs (~120 KB each, like COCO's) served by
    tests/httpserver.py's LocalServer on 127.0.0.1 in a separate process, with an injected latency
    per request standing in for a distant image host, for several worker counts, as ratios against
    one worker. The last row re-runs with a full cache: decode + check + resize + write only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from coco_fixtures import TARGETS, generate_coco, image_files, write_json  # noqa: E402

from cnnlab.config import Coco5Config, DownloadSource  # noqa: E402
from cnnlab.data.coco5 import index_annotations, select_images  # noqa: E402
from cnnlab.data.coco_build import build_coco5  # noqa: E402


def _serve(root: str, delay: float, queue) -> None:
    from httpserver import LocalServer

    server = LocalServer(Path(root), delay=delay).start()
    queue.put(server.port)
    while True:
        time.sleep(3600)


def selection_table(n_images: int, repeats: int) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances_train2017.json"
        start = time.perf_counter()
        write_json(path, generate_coco(n_images, seed=0))
        rows.append(("generate + write json (not part of a build)",
                     f"{time.perf_counter() - start:.2f} s"))
        rows.append(("json file size", f"{path.stat().st_size / 1e6:.1f} MB"))
        start = time.perf_counter()
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
        rows.append(("json.load", f"{time.perf_counter() - start:.2f} s"))
        start = time.perf_counter()
        coco = index_annotations(dataset)
        rows.append(("pycocotools createIndex", f"{time.perf_counter() - start:.2f} s"))
        rows.append(("images / annotations",
                     f"{len(coco.imgs):,} / {len(coco.anns):,}"))
        cfg = Coco5Config(annotations=DownloadSource(url="unused", md5=None), classes=TARGETS,
                          train_per_class=1600, val_per_class=400)
        for exclusive in (False, True):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                sel = select_images(coco, dataclasses.replace(cfg, exclusive=exclusive))
                times.append(time.perf_counter() - start)
            eligible = ", ".join(f"{c} {n}" for c, n in zip(TARGETS, sel.eligible, strict=True))
            rows.append((f"selection, exclusive={exclusive} (median of {repeats})",
                         f"{statistics.median(times) * 1000:.1f} ms (eligible: {eligible})"))
    return rows


def build_table(per_class: tuple[int, int], delay: float, workers: list[int]) -> list[tuple]:
    train, val = per_class
    rates = dict.fromkeys(TARGETS, 0.12)
    dataset = generate_coco(train * 20, seed=1, rates=rates, sizes=[(640, 480), (480, 640)])
    cfg = Coco5Config(annotations=DownloadSource(url="unused", md5=None), classes=TARGETS,
                      train_per_class=train, val_per_class=val, retries=1)
    sel = select_images(index_annotations(dataset), cfg)
    picked = {i for ids in sel.picked for i in ids}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ann = write_json(tmp / "instances_train2017.json", dataset)
        start = time.perf_counter()
        for rel, data in image_files(dataset, only=picked).items():
            (tmp / "host" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "host" / rel).write_bytes(data)
        mean_kb = sum(p.stat().st_size for p in (tmp / "host").rglob("*.jpg")) / len(picked) / 1e3
        print(f"  (generated {len(picked)} JPEGs of 640x480, mean {mean_kb:.0f} KB, in "
              f"{time.perf_counter() - start:.1f} s)", file=sys.stderr)

        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        server = ctx.Process(target=_serve, args=(str(tmp / "host"), delay, queue), daemon=True)
        server.start()
        try:
            base = f"http://127.0.0.1:{queue.get(timeout=60)}/"
            baseline = None

            def timed_build(n: int, label: str) -> None:
                nonlocal baseline
                run_cfg = dataclasses.replace(cfg, image_source=base, workers=n)
                out = tmp / f"w{n}"
                start = time.perf_counter()
                build_coco5(run_cfg, ann, out / "prepared", out / "browse", out / "cache",
                            progress=False)
                seconds = time.perf_counter() - start
                rate = len(picked) / seconds
                baseline = baseline or rate
                rows.append((label, f"{seconds:.2f}", f"{rate:.1f}", f"{rate / baseline:.2f}x"))

            for n in workers:
                timed_build(n, f"{n}")
            # The same build again: every image is in the cache, so this is the no-fetch ceiling.
            timed_build(workers[-1], f"{workers[-1]}, cache full (no fetch)")
        finally:
            server.terminate()
            server.join()
    return rows


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in rows]
    return "\n".join([line, sep, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000, help="annotation file size")
    parser.add_argument("--train", type=int, default=80, help="train images per class (build)")
    parser.add_argument("--val", type=int, default=20, help="val images per class (build)")
    parser.add_argument("--delay", type=float, default=0.030, help="seconds per request")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    print(f"python {platform.python_version()}, opencv {cv2.__version__}, "
          f"{multiprocessing.cpu_count()} CPUs, {platform.platform()}")
    print(f"\n(a) selection on a generated {args.images:,}-image annotation file\n")
    print(table(("step", "time"), selection_table(args.images, repeats=5)))
    images = 5 * (args.train + args.val)
    print(f"\n(b) build of {images} images (5 classes x {args.train} train + {args.val} val), "
          f"LocalServer on 127.0.0.1 with {args.delay * 1000:.0f} ms per request\n")
    print("whole build_coco5 calls: annotation load, selection, fetch, decode, resize, and "
          "writing arrays, JPEGs, manifest and grid\n")
    print(table(("workers", "seconds", "images/s", "vs 1 worker"),
                build_table((args.train, args.val), args.delay, args.workers)))


if __name__ == "__main__":
    main()
