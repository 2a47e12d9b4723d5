"""The security promises, one test per point; where another test already proves a point, it is
named here instead of repeated.

1. Downloaded data is never unpickled. The payload in these tests is a pickle whose __reduce__
   runs `touch <marker>`; each test first shows that plain unpickling does create the marker,
   then that the stage refuses the file in one line and the marker never appears.
2. Checkpoints are read with torch.load(weights_only=True): the evaluated model, the resume file
   and a `weights: <path>` transfer file (here), after a static check that every loader in src/
   is called that way.
3. Archive extraction is safe: nothing is extracted at all (cnnlab.data.cifar10 reads members in
   memory; coco_annotations copies one member, by name, to a path of ours). Members with '..',
   absolute paths, symlinks and hard links are refused in tests/test_cifar10.py (BAD_BINARY's
   dotdot, nested dotdot, absolute, symlink, hardlink; BAD_IMAGEFOLDER's dotdot, absolute,
   symlink in tar and zip) and in the catalogue (tests/test_bad_inputs.py: member-dotdot,
   member-absolute, member-symlink); device files and FIFOs here, and links in the COCO archive.
4. Source URLs are http(s), file:// or a local path. ftp://, data: and s3:// are refused in
   tests/test_download.py (test_unsupported_scheme); here, the stage's own line, more schemes, a
   redirect to another scheme, and URLs that come inside downloaded annotations.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import os
import pickle
import shlex
import stat
import tarfile
import zipfile
from pathlib import Path

import httpserver
import numpy as np
import pytest
import torch
from cifar_archives import write_binary_archive, write_imagefolder_archive
from coco_fixtures import generate_coco, write_json
from httpserver import LocalServer
from test_bad_inputs import Case, check_failure, prepared, run_case, write_params
from test_cifar10 import assert_fails_cleanly
from test_coco5 import BASE, nothing_written

from cnnlab.data.coco_annotations import extract_member
from cnnlab.data.coco_build import build_coco5
from cnnlab.download import download
from cnnlab.errors import CnnlabError

ROOT = Path(__file__).resolve().parents[1]
http_server = httpserver.http_server


class CreatesMarker:
    """Unpickled, this runs `touch <marker>`: the file appearing would mean code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "MARKER"  # outside the project the stage runs in


def live(load, marker: Path) -> None:
    """`load()` (plain unpickling of the test's file) creates the marker: the payload works."""
    load()
    assert marker.exists(), "the payload did not run: the test would prove nothing"
    marker.unlink()


# ------------------------------------------------------------- 1. no pickle of downloaded data


def test_cifar10_python_version_is_refused_not_unpickled(tmp_path, marker):
    payload = pickle.dumps({"data": CreatesMarker(marker), "labels": [0]})
    live(lambda: pickle.loads(payload), marker)

    def setup(root: Path, server: LocalServer | None) -> None:
        write_params(root)
        (root / "data/raw").mkdir(parents=True)
        with tarfile.open(root / "data/raw/cifar10.archive", "w:gz") as tf:
            for name in ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)),
                         "test_batch"):
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))

    case = Case("prepare_cifar10", setup, r"data/raw/cifar10\.archive is CIFAR-10's python "
                r"version \(pickled batches\), which cnnlab does not unpickle; use the binary "
                r"version \(cifar-10-binary\.tar\.gz\) or an ImageFolder archive$")
    check_failure(case, run_case(case, tmp_path / "project"))
    assert not marker.exists()


def test_a_pickle_in_place_of_a_binary_batch_is_read_as_bytes(tmp_path, marker):
    payload = pickle.dumps(CreatesMarker(marker))
    live(lambda: pickle.loads(payload), marker)
    archive = tmp_path / "cifar10.archive"
    write_binary_archive(archive, records_per_batch=2, raw={"data_batch_1": payload})
    assert_fails_cleanly(archive, r"data_batch_1\.bin in .* is truncated")
    assert not marker.exists()


def test_prepared_arrays_holding_pickles_are_refused(tmp_path, marker):
    """The prepared dataset can come from a DVC remote: it is read with allow_pickle=False."""
    def setup(root: Path, server: LocalServer | None) -> None:
        write_params(root)
        prepared(root)
        np.save(root / "data/prepared/cifar10/train_labels.npy",
                np.array([CreatesMarker(marker)], dtype=object), allow_pickle=True)

    control = tmp_path / "control.npy"
    np.save(control, np.array([CreatesMarker(marker)], dtype=object), allow_pickle=True)
    live(lambda: np.load(control, allow_pickle=True), marker)
    case = Case("train", setup, r"prepared dataset data/prepared/cifar10 is damaged \(train\): "
                r"Object arrays cannot be loaded when allow_pickle=False$")
    check_failure(case, run_case(case, tmp_path / "project"))
    assert not marker.exists()


# ---------------------------------------------------------- 2. checkpoints: weights_only=True


# Every callable that can unpickle, by its full name: allowed only when called directly with the
# keyword that makes it safe (None: never allowed). A reference resolves through `import x as y`,
# `from x import y as z` and plain assignments, so aliases and re-exports are caught where the
# name is first taken; getattr(module, "name") with a constant string counts as a reference too.
UNPICKLERS: dict[str, tuple[str, object] | None] = {
    **{f"{m}.{f}": None for m in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
       for f in ("load", "loads", "Unpickler")},
    "torch.load": ("weights_only", True),
    "torch.serialization.load": ("weights_only", True),
    "torch.hub.load_state_dict_from_url": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
    "numpy.lib.npyio.load": ("allow_pickle", False),
    "joblib.load": None, "pandas.read_pickle": None, "shelve.open": None,
    "marshal.load": None, "marshal.loads": None, "torch.package.PackageImporter": None,
}


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> the full name it stands for, from the module's imports."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {k: v.replace("np.", "numpy.") if v.startswith("np.") else v for k, v in names.items()}


def _full_name(node: ast.AST, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _full_name(node.value, names)
        return f"{base}.{node.attr}" if base else None
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "getattr" and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        base = _full_name(node.args[0], names)
        return f"{base}.{node.args[1].value}" if base else None
    return None


def unpickling_references(source: str) -> list[str]:
    """'line: full name' of every reference to an unpickler that is not a direct call with the
    keyword that makes it safe."""
    tree = ast.parse(source)
    names = _imports(tree)
    for node in ast.walk(tree):  # `loader = torch.load` makes `loader` mean torch.load too
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            target = _full_name(node.value, names)
            if target in UNPICKLERS:
                names[node.targets[0].id] = target
    safe_calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := _full_name(node.func, names)) in UNPICKLERS:
            rule = UNPICKLERS[name]
            if rule is not None and _keyword(node, rule[0]) is rule[1]:
                safe_calls.add(id(node.func))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute | ast.Call) and id(node) not in safe_calls:
            name = _full_name(node, names)
            parent_taken = name in UNPICKLERS
            if parent_taken and not (isinstance(node, ast.Name) and node.id == name):
                found.append(f"{node.lineno}: {name}")
    return sorted(set(found), key=lambda f: int(f.split(":")[0]))


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def project_sources() -> list[Path]:
    return [*sorted((ROOT / "src/cnnlab").rglob("*.py")), *sorted((ROOT / "stages").glob("*.py"))]


def test_nothing_in_src_or_stages_can_unpickle():
    """Every torch.load says weights_only=True and every np.load allow_pickle=False, however
    it is spelled; nothing else that unpickles is referenced; no archive is extracted to the
    file system."""
    for path in project_sources():
        source = path.read_text(encoding="utf-8")
        found = unpickling_references(source)
        assert not found, f"{path.relative_to(ROOT)}:{found[0]} can unpickle"
        names = {node.attr for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Attribute)}
        assert not names & {"extractall", "extract"}, f"{path} extracts an archive"
    # The scan sees the real loaders: the checkpoint reader, the transfer weights, the arrays.
    text = "".join(p.read_text(encoding="utf-8") for p in project_sources())
    assert text.count("weights_only=True") >= 3 and text.count("allow_pickle=False") >= 2


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(f)",
    "import torch\ntorch.load(f, weights_only=False)",
    "from torch import load\nload(f)",
    "from torch import load as tl\ntl(f, map_location='cpu')",
    "import torch as t\nt.load(f)",
    "import torch\ntorch.serialization.load(f)",
    "from torch.serialization import load\nload(f)",
    "import torch\nloader = torch.load\nloader(f, weights_only=True)",
    "import torch, functools\nfunctools.partial(torch.load, weights_only=True)",
    "import torch\ngetattr(torch, 'load')(f)",
    "import numpy as np\nnp.load(f)",
    "import numpy\nnumpy.load(f, allow_pickle=True)",
    "from numpy import load\nload(f)",
    "import pickle\npickle.loads(b)",
    "from pickle import Unpickler\nUnpickler(f).load()",
    "import _pickle as p\np.loads(b)",
    "import pandas as pd\npd.read_pickle(f)",
    "import shelve\nshelve.open(f)",
])
def test_the_scan_catches_each_way_of_spelling_an_unpickler(source):
    assert unpickling_references(source), source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(f, map_location='cpu', weights_only=True)",
    "from torch import load\nload(f, weights_only=True)",
    "import numpy as np\nnp.load(f, allow_pickle=False)",
    "import pickle\nraise pickle.UnpicklingError('x')",
    "import torch\ntorch.save(x, f)",
])
def test_the_scan_passes_safe_loaders(source):
    assert not unpickling_references(source), source


def _evil_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": CreatesMarker(marker)}, path)


CHECKPOINTS = {
    # evaluate reads the trained model (and needs the training summary beside it)
    "model": ("evaluate", {}, "data/models/toy/final.pt",
              r"data/models/toy/final\.pt holds a pickled Python object \((posix|nt)\.system\), "
              r"not only tensors: refused, as unpickling it could run code \(checkpoints are "
              r"read with torch\.load\(weights_only=True\)\)$"),
    "resume": ("train", {}, "data/resume/toy.pt",
               r"data/resume/toy\.pt holds a pickled Python object \((posix|nt)\.system\), "
               r"not only tensors: refused"),
    "transfer-weights": ("train", {"model": "resnet18_tl", "weights": "evil.pth"}, "evil.pth",
                         r"weights file 'evil\.pth' for resnet18_tl is not a torch state dict "
                         r"\(UnpicklingError: Weights only load failed\."),
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_checkpoint_with_code_is_refused(kind, tmp_path, marker):
    stage, toy, file, expect = CHECKPOINTS[kind]
    control = tmp_path / "control.pt"
    _evil_checkpoint(control, marker)
    live(lambda: torch.load(control, weights_only=False), marker)

    def setup(root: Path, server: LocalServer | None) -> None:
        write_params(root, **toy)
        prepared(root)
        _evil_checkpoint(root / file, marker)
        summary = root / "metrics/toy/train/metrics.json"
        summary.parent.mkdir(parents=True)
        summary.write_text(json.dumps({"epochs": 1, "train_images": 64}), encoding="utf-8")

    case = Case(stage, setup, expect)
    check_failure(case, run_case(case, tmp_path / "project"))
    assert not marker.exists()


# ------------------------------------------------------------------- 3. safe archive reading


def _tar_with(path: Path, info: tarfile.TarInfo) -> None:
    write_imagefolder_archive(path, ["a", "b"], fmt="tar")
    with tarfile.open(path, "a") as tf:
        tf.addfile(info)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE],
                         ids=["char-device", "block-device", "fifo"])
def test_device_files_and_fifos_are_refused(tmp_path, kind):
    info = tarfile.TarInfo("train/a/9999.png")
    info.type, info.devmajor, info.devminor = kind, 1, 3  # /dev/null's numbers
    archive = tmp_path / "cifar10.archive"
    _tar_with(archive, info)
    assert_fails_cleanly(archive, r"'train/a/9999\.png' .* is a device or special file; only "
                                  r"regular files and folders are allowed")


def test_special_file_in_zip_is_refused(tmp_path):
    archive = tmp_path / "cifar10.archive"
    write_imagefolder_archive(archive, ["a", "b"], fmt="zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("train/a/9999.png")
        info.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(info, b"")
    assert_fails_cleanly(archive, r"'train/a/9999\.png' .* is a special file")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE], ids=["symlink", "hardlink"])
def test_coco_annotation_member_that_is_a_link_is_refused(tmp_path, kind):
    member = "annotations/instances_train2017.json"
    archive = tmp_path / "annotations.archive"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.type, info.linkname = kind, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(CnnlabError, match=f"member '{member}' is not a regular file$"):
        extract_member(archive, member, tmp_path / "out" / "instances.json")
    assert not (tmp_path / "out" / "instances.json").exists()


# ---------------------------------------------------------------- 4. URL schemes: http(s), file


def test_download_stage_refuses_other_schemes_in_one_line(tmp_path):
    def setup(root: Path, server: LocalServer | None) -> None:
        write_params(root, data={"url": "ftp://example.com/cifar-10-binary.tar.gz"})

    case = Case("download_cifar10", setup, r"unsupported URL scheme 'ftp' in "
                r"ftp://example\.com/cifar-10-binary\.tar\.gz: only http\(s\)://, file:// or a "
                r"local path are allowed$")
    check_failure(case, run_case(case, tmp_path / "project"))


@pytest.mark.parametrize("url", ["javascript:alert(1)", "gopher://example.com/1",
                                 "jar:file:///x.jar!/a", "sftp://example.com/a.tar.gz",
                                 "HTTP+unix://%2Frun%2Fx.sock/a"])
def test_more_schemes_are_refused(url, tmp_path):
    with pytest.raises(CnnlabError, match=r"^unsupported URL scheme '[^']+' in .*: only "
                                          r"http\(s\)://, file:// or a local path are allowed$"):
        download(url, tmp_path / "a", None, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/a.tar.gz", "file:///etc/passwd",
                                    "data:,hello"])
def test_a_redirect_to_another_scheme_is_not_followed(target, http_server, tmp_path):
    http_server.redirect("a.tar.gz", target)
    url = http_server.url("a.tar.gz")
    with pytest.raises(CnnlabError, match="(?i)redirect") as info:
        download(url, tmp_path / "a", None, backoff=0.01, progress=False)
    assert "\n" not in str(info.value) and url in str(info.value)
    assert http_server.count("a.tar.gz") == 1  # refused, not retried
    assert list(tmp_path.iterdir()) == []


def test_coco_urls_from_downloaded_annotations_must_be_http(tmp_path):
    """A hostile annotations file cannot make the build read local files as images."""
    coco = generate_coco(400)
    for image in coco["images"]:
        image["coco_url"] = (tmp_path / "private.jpg").as_uri()
    annotations = write_json(tmp_path / "instances.json", coco)
    out = tmp_path / "build"
    with pytest.raises(CnnlabError, match=r"has coco_url 'file://.*private\.jpg': only http\(s\) "
                                          r"URLs are fetched from the annotations$"):
        build_coco5(dataclasses.replace(BASE, retries=0), annotations, out / "prepared",
                    out / "browse", out / "cache", progress=False)
    nothing_written(out)

