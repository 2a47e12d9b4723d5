"""Build the carry folder that benchmarks/gpu_check.py installs from on a lent GPU machine
(benchmarks/README.md, "GPU check"). That machine has Python 3.12, torch and the rest of the
scientific stack, but no dvc, dvclive or pycocotools and no network; what travels to it is the
working tree plus carried git-ignored folders, 64 MiB at most per call. So, from the project root:

    python benchmarks/build_gpu_carry.py [--out .gpu-carry] [--archive PATH] [--limit-mib 64]

writes OUT/wheels/ (one wheel per distribution that dvc, dvclive and pycocotools pull in at the
versions requirements.lock pins, less what the machine already has) and OUT/cifar10-jpeg.tar.gz,
prints each file's size and the total with the working tree, and exits 1 with a one-line error if
that is over the limit. The folder is built beside OUT and renamed into place only when complete,
so a failed build leaves nothing half-made under OUT's name.

Distributions with no wheel for the machine are built here from their source (sdist): a pure-
Python one gives a py3-none-any wheel that runs anywhere; one that needs compiling stops the build
with its name, since it must be built on a cp312 manylinux machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, canonicalize_version, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# These three names must match gpu_check.py (REQUIRED_MODULES, ARCHIVE_NAME and the wheels/
# folder that phase_install globs); tests/test_gpu_carry.py checks that they do.
ROOTS = ("dvc", "dvclive", "pycocotools")
ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
WHEELS = "wheels"
MANYLINUX_IMAGE = "quay.io/pypa/manylinux2014_x86_64"
# torch 2.11's own wheels are manylinux_2_28, so the machine's glibc is 2.28 or newer: wheels
# for any manylinux up to 2_28 run there. pip matches manylinux_2_N exactly, hence the list
# (newest first: pip prefers the platform named first, as it would on the machine itself).
PLATFORMS = (*(f"manylinux_2_{n}_x86_64" for n in range(28, 16, -1)), "manylinux2014_x86_64")

# What the GPU machine already has, so carrying it would only cost space and could shadow the
# build its torch was installed with: torch, torchvision, NumPy, OpenCV, scikit-learn, SciPy,
# matplotlib, PyYAML, tqdm, pytest, and the distributions they themselves depend on. Its image
# also holds aiohttp, requests, rich and more of dvc's needs, at versions nobody here has read;
# those are carried at the lock's versions (into gpu_check's own --target folder) instead, as is
# nvidia-ml-py, which dvclive needs and torch does not. torch's CUDA libraries (nvidia-cublas
# and the like) are not listed: nothing dvc needs pulls them in, and the size check would stop
# a lock where something did. typing-extensions and fsspec are carried although torch brings
# them: dvc's stack pins versions (pydantic-core needs a recent typing-extensions, dvc-objects a
# range of fsspec) that the machine's copies may not meet, and both are small and compatible.
EXCLUDE = frozenset({
    "torch", "torchvision", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
    "filelock", "setuptools", "cuda-bindings", "cuda-pathfinder",
    "cuda-toolkit",
    "numpy", "opencv-python-headless", "scikit-learn", "scipy", "joblib", "threadpoolctl",
    "narwhals", "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "packaging",
    "pillow", "pyparsing", "python-dateutil", "six", "pyyaml", "tqdm", "pytest", "iniconfig",
    "pluggy", "pygments",
})

PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#\\]+)")
# "# via NAME", "#   NAME" or "#   NAME (pyproject.toml)"; "# via" alone and "#   -c FILE" give
# no name.
VIA = re.compile(r"#\s*(?:via(?:\s+|$))?([A-Za-z0-9][A-Za-z0-9._-]*)?")


class CarryError(Exception):
    """The folder cannot be built as asked; the message is one line that says why."""


@dataclasses.dataclass(frozen=True)
class Pin:
    """One `name==version` line of the lock and the distributions its `# via` lines name."""

    name: str  # canonical (PEP 503) name
    version: str
    via: frozenset[str]

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclasses.dataclass(frozen=True)
class Target:
    """The interpreter and platforms the wheels must install on, and where else pip may look."""

    python_version: str
    platforms: tuple[str, ...]
    find_links: tuple[Path, ...] = ()


# ------------------------------------------------------------------------------ what to carry


def read_lock(text: str) -> dict[str, Pin]:
    """The pins of a pip-compile lock, with who needs each (its `# via` annotations), so the
    machine gets exactly the lock's versions and the dependency closure needs no resolver."""
    versions: dict[str, str] = {}
    via: dict[str, set[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        pin = PIN.match(raw)  # a pin starts at column 0, its annotations are indented
        if pin:
            current = canonicalize_name(pin[1])
            versions[current], via[current] = pin[2], set()
        elif line.startswith("--hash"):
            continue  # --generate-hashes continuation lines belong to the pin above
        elif line.startswith("#") and current:
            needer = VIA.match(line)
            if needer and needer[1]:
                via[current].add(canonicalize_name(needer[1]))
        else:
            current = None
    return {name: Pin(name, version, frozenset(via[name])) for name, version in versions.items()}


def closure(pins: dict[str, Pin], roots: Iterable[str]) -> set[str]:
    """`roots` and every pin that something already in the set needs, by the `# via` lines."""
    names = {canonicalize_name(r) for r in roots}
    missing = sorted(names - pins.keys())
    if missing:
        raise CarryError(f"{missing[0]} is not pinned in the lock; pin it there first")
    grown = True
    while grown:
        more = {p.name for p in pins.values() if p.via & names} - names
        names |= more
        grown = bool(more)
    return names


def to_carry(pins: dict[str, Pin], roots: Iterable[str] = ROOTS) -> list[Pin]:
    """The pins the GPU machine lacks: the roots' closure less what it already has. The closure
    runs through excluded pins too (fsspec[http] needs aiohttp even though fsspec is there)."""
    return sorted((pins[n] for n in closure(pins, roots) if n not in EXCLUDE),
                  key=lambda p: p.name)


# ---------------------------------------------------------------------------- fetch and build


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                          capture_output=True, text=True)


def download_args(target: Target, dest: Path) -> list[str]:
    args = ["download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", target.python_version, "--dest", str(dest), "-q"]
    for platform in target.platforms:
        args += ["--platform", platform]
    for folder in target.find_links:
        args += ["--find-links", str(folder)]
    return args


def download_wheels(pins: list[Pin], dest: Path, target: Target) -> list[Pin]:
    """Fetch each pin's wheel for the target; the pins that have none (source-only, or no wheel
    for these platforms). One pip call for all first, one per pin only when that fails, since
    pip gives up on the whole list at the first pin it cannot satisfy."""
    dest.mkdir(parents=True, exist_ok=True)
    if pip(*download_args(target, dest), *(p.spec for p in pins)).returncode == 0:
        return []
    return [p for p in pins if pip(*download_args(target, dest), p.spec).returncode != 0]


def is_pure(wheel: Path) -> bool:
    _, _, _, tags = parse_wheel_filename(wheel.name)
    return all(tag.abi == "none" and tag.platform == "any" for tag in tags)


def build_from_source(pin: Pin, dest: Path) -> Path:
    """Build `pin`'s wheel here from its sdist. Only a pure-Python result is kept: a compiled
    one would be for this machine's Python and libc, not the GPU machine's."""
    with tempfile.TemporaryDirectory(prefix="sdist-") as scratch:
        done = pip("wheel", "--no-deps", "--no-binary", pin.name, "--wheel-dir", scratch,
                   "-q", pin.spec)
        built = sorted(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or len(built) != 1:
            last = (done.stderr.strip().splitlines() or ["no wheel built"])[-1]
            raise CarryError(f"{pin.spec} has no wheel for the GPU machine and building it from "
                             f"source here failed: {last[:200]}")
        if not is_pure(built[0]):
            raise CarryError(f"{pin.spec} has no wheel for the GPU machine and needs compiling: "
                             f"build it on a cp312 manylinux machine or in docker image "
                             f"{MANYLINUX_IMAGE}, then pass its folder with --find-links")
        return Path(shutil.move(str(built[0]), dest / built[0].name))


def check_wheels(pins: list[Pin], folder: Path) -> None:
    """Exactly one wheel per pin at the pinned version: gpu_check installs them with --no-deps,
    so a missing one is an import error there and two of one name stop the whole install."""
    found: dict[str, str] = {}
    for wheel in folder.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if name in found:
            raise CarryError(f"two wheels of {name} in {folder}")
        found[name] = canonicalize_version(version)
    for pin in pins:
        if found.pop(pin.name, None) != canonicalize_version(pin.version):
            raise CarryError(f"no wheel of {pin.spec} in {folder}")
    if found:
        raise CarryError(f"unexpected wheel in {folder}: {sorted(found)[0]}")


def requirements(wheel: Path, python_version: str) -> list[Requirement]:
    """The wheel's Requires-Dist lines that apply on the GPU machine (Linux, CPython at
    `python_version`, no extras asked for)."""
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": ""}
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode("utf-8")
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
            if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def check_closure(folder: Path, python_version: str) -> dict[str, SpecifierSet]:
    """Every requirement of every carried wheel is met by another carried wheel or left to the
    machine (EXCLUDE): the lock was resolved here, on another Python, and may lack a dependency
    only the target's Python needs. Returns what the machine must provide, with its specifiers
    combined; gpu_check's install phase checks those there."""
    carried = {parse_wheel_filename(w.name)[0]: parse_wheel_filename(w.name)[1]
               for w in folder.glob("*.whl")}
    machine: dict[str, SpecifierSet] = {}
    for wheel in sorted(folder.glob("*.whl")):
        for req in requirements(wheel, python_version):
            name = canonicalize_name(req.name)
            if name in carried and not req.specifier.contains(carried[name], prereleases=True):
                raise CarryError(f"{wheel.name} needs {req}, but {name} {carried[name]} is "
                                 f"carried")
            if name in EXCLUDE:
                machine[name] = machine.get(name, SpecifierSet()) & req.specifier
            elif name not in carried:
                raise CarryError(f"{wheel.name} needs {req}, which is neither carried nor on "
                                 f"the machine: pin it in the lock or add it to EXCLUDE")
    return machine


def fetch_wheels(pins: list[Pin], dest: Path, target: Target) -> None:
    """wheels/ as gpu_check's install phase reads it: downloaded where a wheel exists, built
    from source where only an sdist does."""
    print(f"build_gpu_carry: downloading {len(pins)} wheels for Python {target.python_version}")
    for pin in download_wheels(pins, dest, target):
        wheel = build_from_source(pin, dest)
        print(f"build_gpu_carry: {pin.spec} has no wheel; built {wheel.name} from its sdist")
    check_wheels(pins, dest)
    machine = check_closure(dest, target.python_version)
    print("build_gpu_carry: left to the machine: "
          + ", ".join(f"{name}{spec}" for name, spec in sorted(machine.items())))


# ------------------------------------------------------------------------ size and the folder


def sizes(folder: Path) -> list[tuple[str, int]]:
    """(path inside the folder, bytes) of every file, largest first: what to cut is on top."""
    rows = [(str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
            if p.is_file()]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def tree_bytes(root: Path = ROOT) -> int:
    """What travels besides the carried folder: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=root, capture_output=True)
    if listed.returncode != 0:
        return 0
    paths = (root / name for name in listed.stdout.decode().split("\0") if name)
    return sum(p.stat().st_size for p in paths if p.is_file())


def report(rows: list[tuple[str, int]], tree: int, limit_mib: float) -> None:
    """Print the table and total; raise in one line when folder and tree exceed the limit."""
    mib = 2**20
    width = max([len(name) for name, _ in rows] + [30])
    for name, size in rows:
        print(f"{name:<{width}}  {size / mib:8.2f}")
    folder = sum(size for _, size in rows)
    print(f"{'total (MiB)':<{width}}  {folder / mib:8.2f}")
    print(f"{'with the working tree (MiB)':<{width}}  {(folder + tree) / mib:8.2f}"
          f"  (limit {limit_mib:g})")
    if folder + tree > limit_mib * mib:
        raise CarryError(f"carry folder {folder / mib:.2f} MiB + working tree {tree / mib:.2f} "
                         f"MiB is over the {limit_mib:g} MiB limit; cut the largest wheels")


def replace_folder(built: Path, out: Path) -> None:
    """Put the finished folder under `out`'s name; an older one is moved aside, then removed."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    built.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def build(out: Path, archive: Path, pins: list[Pin], target: Target, limit_mib: float,
          tree: int = 0, fetch: Callable[[list[Pin], Path, Target], None] = fetch_wheels
          ) -> None:
    """Build the folder beside `out` and rename it into place only once complete and within the
    limit; on any failure, interruptions included, the half-made folder is removed."""
    if not archive.is_file():
        raise CarryError(f"CIFAR-10 archive not found: {archive} (pass --archive)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        fetch(pins, work / WHEELS, target)
        shutil.copyfile(archive, work / ARCHIVE_NAME)
        report(sizes(work), tree, limit_mib)
        replace_folder(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------- main


def default_archive() -> Path:
    """$CNNLAB_DATASETS/cifar10-jpeg.tar.gz (as the tests read it), else ../shared/datasets."""
    datasets = os.environ.get("CNNLAB_DATASETS")
    folder = Path(datasets) if datasets else ROOT.parent / "shared" / "datasets"
    return folder / ARCHIVE_NAME


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-carry",
                        help="the carry folder (default: .gpu-carry, git-ignored)")
    parser.add_argument("--archive", type=Path, default=default_archive(),
                        help=f"CIFAR-10 archive (default: $CNNLAB_DATASETS/{ARCHIVE_NAME}, "
                             f"else ../shared/datasets/{ARCHIVE_NAME})")
    parser.add_argument("--lock", type=Path, default=LOCK, help="pip-compile lock to pin from")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    parser.add_argument("--platform", action="append", dest="platforms",
                        help="wheel platform tag, repeatable (default: manylinux_2_28 down to "
                             "manylinux2014, x86_64)")
    parser.add_argument("--find-links", action="append", type=Path, default=[],
                        help="extra folder of wheels, e.g. ones built in the manylinux image")
    parser.add_argument("--limit-mib", type=float, default=64.0,
                        help="most MiB the folder and the working tree may take together")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = Target(args.python_version, tuple(args.platforms or PLATFORMS),
                    tuple(args.find_links))
    try:
        pins = to_carry(read_lock(args.lock.read_text(encoding="utf-8")))
        build(args.out, args.archive, pins, target, args.limit_mib, tree_bytes())
    except (CarryError, OSError) as exc:
        print(f"build_gpu_carry: error: {exc}", file=sys.stderr)
        return 1
    print(f"build_gpu_carry: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
