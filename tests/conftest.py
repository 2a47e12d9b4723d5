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


@pytest.fixture(scope="session")
def coco_mini(tmp_path_factory) -> Path:
    """The real COCO mini subset, extracted once per worker: the folder holding annotations/.
    Tests read it and never write to it."""
    from coco_fixtures import extract_mini

    return extract_mini(tmp_path_factory.mktemp("coco-mini"))


# The files that take longest, longest first. pytest-xdist (--dist loadfile) hands whole files to
# its workers in collection order; starting the long end-to-end files first keeps one of them
# from being the last thing running while the other worker sits idle.
LONGEST_FIRST = ("test_full_pipeline_e2e.py", "test_pipeline_e2e.py", "test_gpu_check.py",
                 "test_queue_e2e.py", "test_ddp.py", "test_bad_inputs.py", "test_resume.py",
                 "test_views.py", "test_fastpath.py", "test_realdata_training.py")


def pytest_configure(config):
    # xdist reorders files by their number of tests unless told not to; keep the order below.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a file
