"""Fetch a dataset archive to a local path, verified by md5, without ever leaving a partial file.

The pipeline's download stages call `download()`. It accepts http(s):// URLs, file:// URLs and
plain local paths (so a mirror on disk or a shared drive works the same way as the internet).
The bytes are streamed to a temporary name beside the destination while their md5 is computed,
and only a verified file is renamed into place: DVC must never cache a truncated archive, and a
failed run must leave an older good copy alone.

Network failures that tend to go away (refused or reset connections, timeouts, a body cut short,
HTTP 5xx and 429) are retried with exponential backoff. When the temporary file already holds
part of the body, the next attempt asks for the rest with a Range request; a server that ignores
Range simply sends the whole file again and the download starts over.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cnnlab import __version__
from cnnlab.atomic import atomic_path
from cnnlab.errors import CnnlabError

__all__ = ["download"]

_CHUNK = 1 << 20  # 1 MiB: few Python-level iterations for multi-GB archives, little memory.
_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Transient(Exception):
    """A failure that another attempt may not hit; str() is the one-line reason."""


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """urllib follows a redirect to ftp:// too (it stops only file:// and the like): a source
    given as http(s) must not be turned into another scheme by whoever answers it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            fp.close()
            raise CnnlabError(f"{req.full_url} redirects to {newurl}: only http(s) redirects "
                              f"are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    desc: str | None = None,
) -> Path:
    """Copy `url` to `dest` and return `dest` as a Path.

    `url` is an http(s):// or file:// URL or a local path. If `md5` is given (32 hex digits) the
    file must match it, else CnnlabError is raised and `dest` is left as it was. Transient network
    failures are retried up to `retries` times (so at most `retries + 1` attempts), sleeping
    `backoff * 2**attempt` seconds before retry number `attempt + 1`. `timeout` bounds each
    connect and each read, not the whole transfer, so a slow but live download is never cut off.
    """
    dest = Path(dest)
    expected = _check_md5(md5)
    if dest.is_dir():
        raise CnnlabError(f"download destination is a directory: {dest}")
    label = desc or dest.name

    source = _local_source(url)
    if source is not None:
        actual = _copy_local(source, dest, expected, progress, label)
    else:
        actual = _fetch_http(url, dest, expected, retries, backoff, timeout, progress, label)
    return actual


def _check_md5(md5: str | None) -> str | None:
    if md5 is None:
        return None
    if not isinstance(md5, str) or not _MD5_RE.fullmatch(md5.strip()):
        raise CnnlabError(f"md5 must be 32 hexadecimal characters, got {md5!r}")
    return md5.strip().lower()


def _local_source(url: str) -> Path | None:
    """Return the local file `url` names, None for http(s), or raise for any other scheme."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise CnnlabError(f"URL has no host: {url}")
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise CnnlabError(f"file:// URL must name a local path, not host {parts.netloc!r}")
        return Path(urllib.request.url2pathname(parts.path))
    # A one-letter "scheme" is a Windows drive letter (C:\data\x.tar.gz), i.e. a local path.
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return Path(url)
    raise CnnlabError(
        f"unsupported URL scheme {scheme!r} in {url}: "
        "only http(s)://, file:// or a local path are allowed"
    )


def _copy_local(source: Path, dest: Path, expected: str | None, progress: bool, label: str) -> Path:
    """Copy a local file through the same hash-then-rename path as a download (no retries)."""
    if not source.exists():
        raise CnnlabError(f"source not found: {source}")
    if source.is_dir():
        raise CnnlabError(f"source is a directory, not a file: {source}")
    hasher = hashlib.md5()
    try:
        with atomic_path(dest) as tmp:
            with (
                open(source, "rb") as src,
                open(tmp, "wb") as out,
                _bar(source.stat().st_size, 0, progress, label) as bar,
            ):
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    bar.update(len(chunk))
            _verify(str(source), expected, hasher.hexdigest())
    except OSError as e:
        raise CnnlabError(f"could not copy {source} to {dest}: {e}") from e
    return dest


def _fetch_http(
    url: str,
    dest: Path,
    expected: str | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool,
    label: str,
) -> Path:
    attempts = max(retries, 0) + 1
    state = _Partial()
    try:
        with atomic_path(dest) as tmp:
            for attempt in range(attempts):
                try:
                    _attempt(url, tmp, state, timeout, progress, label)
                    break
                except _Transient as e:
                    if attempt + 1 == attempts:
                        raise CnnlabError(
                            f"could not download {url} after {attempts} attempts: {e}"
                        ) from None
                    time.sleep(backoff * 2**attempt)
            _verify(url, expected, state.hasher.hexdigest())
    except OSError as e:
        # Network errors were turned into _Transient inside _attempt, so this is the local disk.
        raise CnnlabError(f"could not write {dest}: {e}") from e
    return dest


class _Partial:
    """What the temporary file already holds, so a retry can ask only for the rest."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.done = 0  # bytes written to the temp file and fed to the hasher
        self.hasher = hashlib.md5()
        self.validator: str | None = None  # ETag or Last-Modified of the first response


def _attempt(
    url: str, tmp: Path, state: _Partial, timeout: float, progress: bool, label: str
) -> None:
    """One GET; appends to `tmp` when the server honours a Range request for the missing tail."""
    headers = {
        "User-Agent": f"cnnlab/{__version__}",
        # Compressed transfer would make the byte counts and the md5 refer to something else.
        "Accept-Encoding": "identity",
    }
    if state.done:
        headers["Range"] = f"bytes={state.done}-"
        if state.validator:
            # If the file changed on the server, it sends all of the new one instead of a tail.
            headers["If-Range"] = state.validator
    response = _open(urllib.request.Request(url, headers=headers), timeout, state, url)
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        mode = _resume_mode(response, state)
        total = None if length is None else state.done + length
        with open(tmp, mode) as out, _bar(total, state.done, progress, label) as bar:
            received = _copy_body(response, out, state, bar)
        # http.client returns b"" rather than raising when the peer closes early, so the only
        # sign of a cut body is a short count.
        if length is not None and received < length:
            raise _Transient(f"connection closed after {state.done} of {total} bytes")


def _open(request: urllib.request.Request, timeout: float, state: _Partial, url: str):
    """The server's response; a failure worth retrying raises _Transient, any other a one-line
    CnnlabError."""
    try:
        return _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        reason = f"HTTP {e.code} {e.reason}"
        if e.code == 416 and state.done:
            # Our Range made no sense to the server (e.g. file shrank): start from scratch.
            state.reset()
            raise _Transient(reason) from None
        if e.code == 429 or e.code >= 500:
            raise _Transient(reason) from None
        raise CnnlabError(f"{reason} for {url}") from None
    except ssl.SSLCertVerificationError as e:
        raise CnnlabError(f"TLS certificate check failed for {url}: {e.verify_message}") from None
    except urllib.error.URLError as e:
        raise _Transient(_reason(e.reason)) from None
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(_reason(e)) from None


def _resume_mode(response, state: _Partial) -> str:
    """'ab' when the response is the missing tail we asked for, 'wb' for a whole file."""
    if response.status == 206 and state.done:
        match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != state.done:
            state.reset()
            raise _Transient("server answered the Range request with a different range")
        return "ab"
    # A full response: the server ignored Range, or this is the first attempt.
    state.reset()
    state.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    return "wb"


def _copy_body(response, out, state: _Partial, bar) -> int:
    """Stream the body into `out` and the running md5; the number of bytes received."""
    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(_reason(e)) from None
        if not chunk:
            return received
        out.write(chunk)
        state.hasher.update(chunk)
        state.done += len(chunk)
        received += len(chunk)
        bar.update(len(chunk))


def _verify(source: str, expected: str | None, actual: str) -> None:
    # Raising inside atomic_path removes the temp file, so a bad copy never reaches dest.
    if expected is not None and actual != expected:
        raise CnnlabError(f"md5 mismatch for {source}: expected {expected}, got {actual}")


def _reason(error: object) -> str:
    """A one-line description of a network error, e.g. 'ConnectionRefusedError: ...'."""
    text = str(error)
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return " ".join(text.split())


def _bar(total: int | None, initial: int, progress: bool, label: str) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        disable=not progress,
    )
