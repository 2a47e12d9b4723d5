"""Take one annotation file out of COCO's annotation archive, and nothing else.

The official archive is annotations_trainval2017.zip; a tar(.gz) in the same layout (such as a
local mini copy) works too. Only the one member is read, by its exact name, and it is written to
a destination we choose, so no member path from the archive ever reaches the file system.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError

_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError)


def extract_member(archive: str | Path, member: str, dest: str | Path) -> Path:
    """Copy `member` of the zip or tar `archive` to `dest` atomically; return dest."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise CnnlabError(f"annotation archive not found: {archive}")
    try:
        with atomic_path(dest) as tmp:
            if zipfile.is_zipfile(archive):
                _from_zip(archive, member, tmp)
            else:
                _from_tar(archive, member, tmp)
    except _CORRUPT as exc:
        raise CnnlabError(f"truncated or corrupt archive {archive}: {exc}") from exc
    return dest


def _missing(archive: Path, member: str, names: list[str]) -> CnnlabError:
    json_names = [n for n in names if n.endswith(".json")][:8]
    return CnnlabError(f"{archive} has no member {member!r} (its json members: "
                       f"{', '.join(json_names) or 'none'})")


def _from_zip(archive: Path, member: str, out: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        if member not in zf.namelist():
            raise _missing(archive, member, zf.namelist())
        info = zf.getinfo(member)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CnnlabError(f"{archive}: member {member!r} is a symlink")
        # Reading to the end checks the CRC, so a corrupt member raises BadZipFile here.
        with zf.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _from_tar(archive: Path, member: str, out: Path) -> None:
    with tarfile.open(archive, mode="r:*") as tf:
        for info in tf:
            if info.name.removeprefix("./") != member:
                continue
            if not info.isfile():
                raise CnnlabError(f"{archive}: member {member!r} is not a regular file")
            src = tf.extractfile(info)
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if out.stat().st_size != info.size:
                raise CnnlabError(f"truncated or corrupt archive {archive}: {member} is short")
            return
        raise _missing(archive, member, tf.getnames())
