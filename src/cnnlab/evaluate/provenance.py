"""What a result was produced with: git revision, library versions and device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata


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
    return {
        "git_rev": git_revision(),
        "device": device,
        "python_version": platform.python_version(),
        "torch_version": _version("torch"),
        "torchvision_version": _version("torchvision"),
        "numpy_version": _version("numpy"),
        "dvc_version": _version("dvc"),
        "cnnlab_version": _version("cnnlab"),
    }
