"""Shared pytest setup. tests/ has no __init__.py, so pytest puts it on sys.path and test modules
import the helper modules beside them (httpserver, cifar_archives) by plain name.

Real-data tests read ../shared/datasets through CNNLAB_DATASETS: they skip when it is unset, and
fail (never skip) when it is set but an archive is missing, so CI cannot pass them silently.
"""

import os
from pathlib import Path

import pytest


def real_archive(name: str) -> Path:
    root = os.environ.get("CNNLAB_DATASETS")
    if not root:
        pytest.skip("CNNLAB_DATASETS is not set (point it at ../shared/datasets)")
    path = Path(root) / name
    if not path.is_file():
        pytest.fail(f"CNNLAB_DATASETS={root} has no {name}")
    return path


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory, worker_id):
    """The real CIFAR-10 (JPEG re-encode) as a PreparedDataset, decoded once per test run: under
    pytest-xdist the first worker to need it saves the arrays where every worker looks (the
    workers' shared temporary root), and the others load them."""
    from filelock import FileLock

    from cnnlab.data.cifar10 import read_cifar10_archive
    from cnnlab.data.prepared import load_prepared, save_prepared

    archive = real_archive("cifar10-jpeg.tar.gz")
    if worker_id == "master":  # no xdist: nothing to share
        return read_cifar10_archive(archive)
    shared = tmp_path_factory.getbasetemp().parent
    with FileLock(str(shared / "real_cifar10.lock")):
        if not (shared / "real_cifar10" / "meta.json").is_file():
            save_prepared(read_cifar10_archive(archive), shared / "real_cifar10")
    return load_prepared(shared / "real_cifar10")
