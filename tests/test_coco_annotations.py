"""Only the one annotation file leaves the archive, from a zip or a tar, or a clear error."""

import io
import tarfile
import zipfile

import pytest

from cnnlab.data.coco_annotations import extract_member
from cnnlab.errors import CnnlabError

MEMBER = "annotations/instances_train2017.json"
PAYLOAD = b'{"images": [], "annotations": [], "categories": []}'


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("maker", [make_zip, make_tar])
def test_extracts_only_the_member(tmp_path, maker):
    archive = tmp_path / "ann.archive"
    maker(archive, {MEMBER: PAYLOAD, "../evil.json": b"x", "annotations/other.json": b"y"})
    dest = tmp_path / "out" / "instances.json"
    extract_member(archive, MEMBER, dest)
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ann.archive",
                                                                          "instances.json"]


@pytest.mark.parametrize("maker", [make_zip, make_tar])
def test_missing_member_names_what_is_there(tmp_path, maker):
    archive = tmp_path / "ann.archive"
    maker(archive, {"annotations/captions_train2017.json": b"{}"})
    with pytest.raises(CnnlabError, match="has no member 'annotations/instances_train2017.json' "
                                          r"\(its json members: annotations/captions"):
        extract_member(archive, MEMBER, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_truncated_archive_fails_and_leaves_nothing(tmp_path):
    archive = tmp_path / "ann.zip"
    make_zip(archive, {MEMBER: PAYLOAD * 1000})
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(CnnlabError, match="truncated or corrupt archive"):
        extract_member(archive, MEMBER, tmp_path / "out.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.zip"]
