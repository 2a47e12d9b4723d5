"""Write outputs under a temporary name and rename them into place.

A crash, a kill or a full disk then leaves either the previous output or nothing under the final
name, never a half-written file that DVC or the next stage would trust. A full disk is also said in
one line naming the output, whichever writer hit it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cnnlab.errors import CnnlabError

_FULL = (errno.ENOSPC, errno.EDQUOT)
# Below this much space left for unprivileged writers, a file system counts as full: no output of
# this pipeline is smaller.
_NEARLY_FULL = 1 << 20


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc`, raised while writing into `folder`, means its file system is full.

    Python's own writes say so with errno ENOSPC (or EDQUOT), also when they are the cause of a
    torch.save error. torch.save to a path (a C++ stream) and numpy's np.save raise errors with no
    errno at all; for those, ask the file system, before the temporary is removed and frees space.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno in _FULL  # another OS error (EACCES, EIO...) is not a full disk
        seen = seen.__cause__ or seen.__context__
    try:
        usage = os.statvfs(folder)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize < _NEARLY_FULL


@contextlib.contextmanager
def _full_disk_named(final: Path, folder: Path) -> Iterator[None]:
    """A full disk while writing `final` (in `folder`) becomes one line naming `final`."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc, folder):
            raise CnnlabError(f"no space left on device writing {final} (free some space and "
                              f"run the stage again)") from exc
        raise


def _remove_stale(final: Path) -> None:
    """Temporaries a killed run (SIGKILL, power loss) left beside `final`. Each final path has
    one writer at a time (DVC locks the stage), so any such leftover is stale."""
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it to `final`, else remove it."""
    final = Path(final)
    with _full_disk_named(final, final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _full_disk_named(final, final.parent):
            yield tmp
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it replaces `final` whole."""
    final = Path(final)
    with _full_disk_named(final, final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with _full_disk_named(final, final.parent):
            yield tmp
            _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_text(final: str | os.PathLike, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
