"""What a result was produced with: git revision, library versions, device, speed settings and
the recipe's names. Written to metrics/<exp>/eval/provenance.json, beside the metrics, in a file
dvc.yaml declares as a plain output: DVC does not read it as metrics, so `dvc metrics diff` of two
identical runs at different commits stays empty while each run still says where it came from."""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from cnnlab.config import Experiment

FILE_NAME = "provenance.json"  # in paths.eval_dir(<exp>)
PACKAGES = ("torch", "torchvision", "numpy", "dvc", "cnnlab")


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_info(device: str) -> dict[str, str]:
    """The git revision, the device and the Python and library versions of this process."""
    return {
        "git_rev": git_revision(),
        "device": device,
        "python_version": platform.python_version(),
        **{f"{package}_version": _version(package) for package in PACKAGES},
    }


def provenance(exp: Experiment, device: str, trained: Mapping[str, object]) -> dict[str, object]:
    """Everything a result depends on but is not a result. `device` is where evaluation ran;
    `trained` is the train summary, which says where training ran and what the fast path did."""
    return {
        **run_info(device),
        "train_device": trained.get("device"),
        "train_speed": trained.get("speed"),  # what the fast path turned on, e.g. bf16 autocast
        "speed": dataclasses.asdict(exp.speed),  # the settings asked for
        "dataset": exp.dataset,
        "eval_split": exp.eval_split,
        "model": exp.model,
        "seed": exp.seed,
        "optimizer": exp.optimizer.settings(),  # as built: the preset's defaults filled in
    }


def write_provenance(folder: Path, info: Mapping[str, object]) -> None:
    """Into `folder`, which the caller renames into place (cnnlab.atomic.atomic_dir)."""
    (folder / FILE_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
