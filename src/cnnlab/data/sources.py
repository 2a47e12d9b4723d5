"""The download stages: each raw source fetched (or copied from a local path), checked against
its md5 and written atomically under data/raw/."""

from __future__ import annotations

from cnnlab import paths
from cnnlab.config import Params
from cnnlab.data.coco_annotations import extract_member
from cnnlab.download import download


def download_cifar10(params: Params) -> None:
    source = params.data.cifar10
    download(source.url, paths.raw_archive("cifar10"), source.md5, desc="cifar10")


def download_coco(params: Params) -> None:
    cfg = params.data.coco5
    archive = paths.raw_archive("coco_annotations")
    download(cfg.annotations.url, archive, cfg.annotations.md5, desc="coco annotations")
    extract_member(archive, f"annotations/instances_{cfg.source_split}.json",
                   paths.coco_instances())
