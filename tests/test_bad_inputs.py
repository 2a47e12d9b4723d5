"""The bad-input catalogue (README, "Bad input and security"): one case each, the real stage script.

Every case writes a small project directory, runs `python stages/<stage>.py` in it and checks what
a user would see: exit code 1, a last stderr line `error: <one line naming the problem>` (the only
`error:` line), no traceback, and the project's files exactly as they were before the run, so
nothing partial sits under the stage's output names and no temporaries are left.

Two cases need the machine's help. Disk full: the stage runs with a small tmpfs mounted over its
output folder, in a private mount namespace (`unshare`), so a real file system really fills up
under every writer (Python's, numpy's and torch.save's C++ one); where no namespace can be made,
those cases skip and say why, except under CI=true, where they fail. Out of memory: the stage
runs under RLIMIT_AS, set 1 GiB above what start-up and a small step take, and asks for a batch
far beyond that; the allocator's real failure is what the stage must translate.

Starting a stage (importing torch and torchvision) takes seconds, so the selected cases run
concurrently, a few at a time, in one module fixture, and each test checks its own case.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import re
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from cifar_archives import (
    BIN_DIR,
    link_member,
    truncate,
    write_binary_archive,
    write_imagefolder_archive,
)
from httpserver import LocalServer, dead_url
from test_training import separable_dataset

from cnnlab.data.prepared import save_prepared

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = "data/raw/cifar10.archive"  # where download_cifar10 writes and prepare_cifar10 reads
BIG = os.urandom(3 << 20)  # served for the full-disk download: larger than its 2 MiB tmpfs
TMPFS_SIZE = "2m"  # above atomic.py's "nearly full" threshold, so only a filled disk counts
TOY = {"model": "cnn", "dataset": "cifar10", "epochs": 1, "batch_size": 16, "seed": 0,
       "optimizer": {"name": "adam", "lr": 0.001}, "log_every": 1, "device": "cpu"}
# Each stage's final outputs (dvc.yaml), which a failed run must not leave behind.
OUTPUTS = {
    "download_cifar10": [ARCHIVE],
    "prepare_cifar10": ["data/prepared/cifar10"],
    "train": ["data/models/toy", "metrics/toy/train", "data/resume/toy.pt"],
    "evaluate": ["metrics/toy.json", "metrics/toy/eval"],
}

STAGE_ARGS = {"train": ("toy",), "evaluate": ("toy",)}  # the others take none

Setup = Callable[[Path, LocalServer | None], None]


@dataclass(frozen=True)
class Case:
    stage: str  # stages/<stage>.py
    setup: Setup  # writes the project's inputs
    expect: str  # a regular expression the error line must contain
    args: tuple[str, ...] | None = None  # None: the stage's usual (STAGE_ARGS)
    env: dict[str, str] = field(default_factory=dict)
    full_disk: str | None = None  # mount a small tmpfs over this folder of the project
    memory_limit: bool = False  # run under an address-space limit


# ------------------------------------------------------------------------------ project inputs


def write_params(root: Path, data: dict | None = None, **toy: object) -> None:
    """The project's params.yaml with one experiment, `toy` (TOY with `toy`'s changes)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["cifar10"].update(data or {})
    params["experiments"] = {"toy": {**TOY, **toy}}
    params.pop("chained", None)  # its experiments start from ones this project lacks
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def prepared(root: Path, n: int = 64) -> None:
    save_prepared(separable_dataset(n=n), root / "data/prepared/cifar10")


def download(url: Callable[[LocalServer], str], md5: str | None = None) -> Setup:
    def setup(root: Path, server: LocalServer) -> None:
        write_params(root, data={"url": url(server), "md5": md5})
    return setup


def archive(write: Callable[[Path], object]) -> Setup:
    """A prepare_cifar10 project whose downloaded archive `write` makes."""
    def setup(root: Path, server: LocalServer | None) -> None:
        write_params(root)
        (root / ARCHIVE).parent.mkdir(parents=True)
        write(root / ARCHIVE)
    return setup


def binary(**kwargs: object) -> Setup:
    return archive(lambda path: write_binary_archive(path, records_per_batch=3, **kwargs))


def imagefolder(**kwargs: object) -> Setup:
    return archive(lambda path: write_imagefolder_archive(path, ["ant", "cat", "dog"], **kwargs))


def experiment(data: int | None = None, **toy: object) -> Setup:
    """A train or evaluate project: params with `toy`'s changes, and `data` prepared images."""
    def setup(root: Path, server: LocalServer | None) -> None:
        write_params(root, **toy)
        if data:
            prepared(root, data)
    return setup


def truncated(path: Path) -> None:
    write_binary_archive(path, records_per_batch=50)
    truncate(path, 0.5)


# ----------------------------------------------------------------------------------- the cases
# Grouped by kind. The slow ones (retries, training, the memory limit) come last and are
# started first.

CASES = {
    # Archives and images
    "wrong-md5": Case(
        "download_cifar10", download(lambda s: s.url("small.tar.gz"), "0" * 32),
        r"md5 mismatch for http://127\.0\.0\.1:\d+/small\.tar\.gz: expected 0{32}, "
        r"got [0-9a-f]{32}$"),
    "truncated-archive": Case(
        "prepare_cifar10", archive(truncated),
        r"truncated or corrupt archive data/raw/cifar10\.archive: "),
    "member-dotdot": Case(
        "prepare_cifar10", binary(extra_members=[("../evil", b"x")]),
        r"unsafe member path '\.\./evil' in data/raw/cifar10\.archive \(absolute paths and "
        r"'\.\.' are not allowed\)$"),
    "member-absolute": Case(
        "prepare_cifar10", binary(extra_members=[("/tmp/evil", b"x")]),
        r"unsafe member path '/tmp/evil' in data/raw/cifar10\.archive"),
    "member-symlink": Case(
        "prepare_cifar10", binary(extra_members=[link_member(f"{BIN_DIR}/evil", "/etc/passwd")]),
        r"member 'cifar-10-batches-bin/evil' in data/raw/cifar10\.archive is a symlink; only "
        r"regular files and folders are allowed$"),
    "missing-class": Case(
        "prepare_cifar10", imagefolder(omit=["test/cat"]),
        r"class 'cat' is in train/ but not in test/ in data/raw/cifar10\.archive$"),
    "empty-class": Case(
        "prepare_cifar10", imagefolder(empty=["train/dog"]),
        r"class folder train/dog in data/raw/cifar10\.archive has no images$"),
    "wrong-image-size": Case(
        "prepare_cifar10",
        imagefolder(replace={"train/ant/0002.png": np.zeros((16, 24, 3), np.uint8)}),
        r"image 'train/ant/0002\.png' in data/raw/cifar10\.archive is 24x16, expected 32x32"),
    "wrong-image-mode": Case(
        "prepare_cifar10", imagefolder(replace={"test/dog/0000.png": np.zeros((32, 32), np.uint8)}),
        r"image 'test/dog/0000\.png' in data/raw/cifar10\.archive is grayscale"),
    "not-an-image": Case(
        "prepare_cifar10", imagefolder(replace={"train/cat/0001.png": b"not an image at all"}),
        r"'train/cat/0001\.png' in data/raw/cifar10\.archive is not a decodable image$"),
    # Params
    "unknown-experiment": Case(
        "train", experiment(), r"unknown experiment 'nope' \(choose from: toy\)$", ("nope",)),
    "unknown-model": Case(
        "train", experiment(model="resnet9000"),
        r"experiments\.toy\.model: unknown name 'resnet9000' \(choose from: ann, cnn, "),
    "unknown-optimizer": Case(
        "train", experiment(optimizer={"name": "adamx", "lr": 0.001}),
        r"experiments\.toy\.optimizer\.name: unknown name 'adamx' \(choose from: adam, adamw, "
        r"rmsprop, sgd\)$"),
    "unknown-scheduler": Case(
        "train", experiment(scheduler={"name": "cyclic"}),
        r"experiments\.toy\.scheduler\.name: 'cyclic' is not valid \(choose from: none, "
        r"onecycle, cosine, "),
    "zero-epochs": Case(
        "train", experiment(epochs=0), r"experiments\.toy\.epochs: must be >= 1, got 0$"),
    "negative-batch-size": Case(
        "train", experiment(batch_size=-4),
        r"experiments\.toy\.batch_size: must be >= 1, got -4$"),
    "lr-as-string": Case(
        "train", experiment(optimizer={"name": "adam", "lr": "0.001"}),
        r"experiments\.toy\.optimizer\.lr: expected float, got str '0\.001'$"),
    # Running
    "missing-prepared-data": Case(
        "train", experiment(),
        r"prepared dataset not found at data/prepared/cifar10 \(run its prepare stage first"),
    "missing-model": Case(
        "evaluate", experiment(data=64),
        r"no trained model for 'toy' at data/models/toy/final\.pt \(run `dvc repro train@toy` "
        r"first\)$"),
    "nan-loss": Case(
        "train", experiment(data=64, optimizer={"name": "sgd", "lr": 1e30}),
        r"loss became (nan|inf) by step \d+: training diverged \(try a lower learning rate\)$"),
    # Any GPU is hidden, so the case means the same on a machine that has one.
    "cuda-without-gpu": Case(
        "train", experiment(data=64, device="cuda"),
        r"device: cuda was asked for but no CUDA GPU is available here \(set device: auto or "
        r"cpu\)$", env={"CUDA_VISIBLE_DEVICES": ""}),
    # 1,024 images resized to 512x512 are 3 GiB of floats: past the limit at the first step.
    "out-of-memory": Case(
        "train", experiment(data=1024, model="resnet18_tl", batch_size=1024,
                            preprocess={"resize": 512}),
        r"out of memory at batch size 1024 on cpu while training; try a smaller batch, e\.g\. "
        r"-S experiments\.toy\.batch_size=512$", memory_limit=True),
    "unreachable-url": Case(
        "download_cifar10", download(lambda s: dead_url("cifar10.tar.gz")),
        r"could not download http://127\.0\.0\.1:\d+/cifar10\.tar\.gz after 5 attempts: "
        r"ConnectionRefusedError: "),
    "disk-full-download": Case(
        "download_cifar10", download(lambda s: s.url("big.bin"), hashlib.md5(BIG).hexdigest()),
        r"no space left on device writing data/raw/cifar10\.archive \(free some space and run "
        r"the stage again\)$", full_disk="data/raw"),
    # The cnn's 8.5 MB state dict, written by torch.save's C++ writer, does not fit in 2 MiB.
    "disk-full-checkpoint": Case(
        "train", experiment(data=64),
        r"no space left on device writing data/models/toy \(free some space and run the stage "
        r"again\)$", full_disk="data/models"),
}


# ---------------------------------------------------------------------------------- running them


@dataclass
class Outcome:
    returncode: int
    stderr: str
    before: dict[str, str]  # the project's files (relative path -> sha256) before the run
    after: dict[str, str]
    outputs_before: list[str]  # the stage's output names present before the run, and after
    outputs_after: list[str]
    mounted_leftovers: list[str] | None = None  # what was left on the tmpfs (full_disk cases)


def outputs(case: Case, root: Path) -> list[str]:
    return [out for out in OUTPUTS[case.stage] if (root / out).exists()]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@functools.cache
def private_mount_namespace() -> tuple[str, ...] | None:
    """An `unshare` prefix in which this process may mount a tmpfs that no one else sees: an
    unprivileged user namespace where the kernel allows one, else a plain mount namespace as
    root. None where neither works (a container without the capability, no util-linux)."""
    for prefix in (("unshare", "--user", "--map-root-user", "--mount"), ("unshare", "--mount")):
        with tempfile.TemporaryDirectory() as folder:
            try:
                probe = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                        folder], capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if probe.returncode == 0:
                return prefix
    return None


@functools.cache
def address_space_limit() -> int:
    """RLIMIT_AS for the out-of-memory case: the address space a stage's start-up and a small
    training step of the same model reach (torch reserves far more than it touches, and that
    differs between machines), plus 1 GiB."""
    probe = ("import resource, torch, cnnlab.train.stage, cnnlab.evaluate.stage\n"
             "from cnnlab.models import build_model\n"
             "build_model('resnet18_tl', 2)(torch.zeros(4, 3, 64, 64)).sum().backward()\n"
             "print(next(int(l.split()[1]) for l in open('/proc/self/status') "
             "if l.startswith('VmPeak')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
    return (int(out.stdout.split()[-1]) << 10) + (1 << 30)


def run_case(case: Case, root: Path, server: LocalServer | None = None) -> Outcome | str:
    """Set the case up in `root` and run its stage; a string is why it cannot run here."""
    root.mkdir()
    case.setup(root, server)
    args = STAGE_ARGS.get(case.stage, ()) if case.args is None else case.args
    command = [sys.executable, str(ROOT / "stages" / f"{case.stage}.py"), *args]
    listing = root.parent / f"{root.name}.leftovers"  # outside the project and the tmpfs
    preexec = None
    if case.full_disk:
        namespace = private_mount_namespace()
        if namespace is None:
            return ("no private mount namespace for a small tmpfs here (needs unprivileged user "
                    "namespaces or root, and util-linux's unshare)")
        (root / case.full_disk).mkdir(parents=True, exist_ok=True)
        script = ('mnt=$1 listing=$2; shift 2; mount -t tmpfs -o size=' + TMPFS_SIZE +
                  ' tmpfs "$mnt" || exit 99; "$@"; rc=$?; find "$mnt" -mindepth 1 > "$listing"; '
                  'exit $rc')
        command = [*namespace, "sh", "-c", script, "sh", case.full_disk, str(listing), *command]
    if case.memory_limit:
        limit = address_space_limit()

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    before, outputs_before = snapshot(root), outputs(case, root)
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **case.env},
                          preexec_fn=preexec)
    leftovers = listing.read_text().split() if case.full_disk and listing.exists() else None
    return Outcome(proc.returncode, proc.stderr, before, snapshot(root), outputs_before,
                   outputs(case, root), leftovers)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LocalServer:
    small = tmp_path_factory.mktemp("mirror") / "small.tar.gz"
    write_binary_archive(small, records_per_batch=3)
    with LocalServer({"small.tar.gz": small.read_bytes(), "big.bin": BIG}) as srv:
        yield srv


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, server) -> dict[str, concurrent.futures.Future]:
    """Every selected case, run concurrently: one per core, and one more for the waiting."""
    chosen = [item.callspec.params["name"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")]
    workers = min(8, (os.cpu_count() or 1) + 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(run_case, CASES[name],
                                     tmp_path_factory.mktemp("bad") / "project", server)
                   for name in reversed(chosen)}
        yield futures
        for future in futures.values():
            future.cancel()  # cases deselected by a failure (-x) need not run


def check_failure(case: Case, outcome: Outcome | str) -> None:
    """The stage failed as a user should see it, and left the project as it was."""
    if isinstance(outcome, str):
        if os.environ.get("CI") == "true":  # CI must prove every case: a skip would hide one
            pytest.fail(f"cannot run in CI: {outcome}")
        pytest.skip(outcome)
    lines = outcome.stderr.strip().splitlines()
    assert outcome.returncode == 1, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], outcome.stderr
    assert re.search(case.expect, lines[-1]), lines[-1]
    print(lines[-1])  # the catalogue's messages: `pytest -rP tests/test_bad_inputs.py` shows them
    # Nothing added, changed or removed: no output, partial or whole, and no temporaries.
    assert outcome.after == outcome.before
    assert outcome.outputs_after == outcome.outputs_before  # not even an empty folder
    if case.full_disk:
        assert outcome.mounted_leftovers == [], "the tmpfs was not listed or not left empty"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_in_one_line_leaving_nothing(name, outcomes):
    check_failure(CASES[name], outcomes[name].result())
