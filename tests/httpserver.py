"""A small real HTTP server on 127.0.0.1 for tests of download code, with fault injection.

Tests talk to it over a real socket, so they exercise the same urllib code paths as a real
mirror: status codes, Content-Length, connections cut mid-body, Range requests.

    from httpserver import LocalServer, dead_url

    with LocalServer({"data/a.bin": b"..."}) as server:
        server.fail(path="data/a.bin", times=2)        # 500 twice, then the file
        download(server.url("data/a.bin"), ...)
        assert server.count("data/a.bin") == 3

Or use the `http_server` fixture (an empty running LocalServer, stopped after the test) by
assigning it in the test module; an import would trip ruff's F811 on the test's argument:

    import httpserver
    http_server = httpserver.http_server

    def test_x(http_server):
        url = http_server.add("a.bin", b"...")

Paths are given without a leading slash ("data/a.bin"); "/data/a.bin" means the same.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

__all__ = ["LocalServer", "dead_url", "http_server"]

_RANGE_RE = re.compile(r"bytes=(\d+)-")


class LocalServer:
    """Serve `files` (a dict path -> bytes, or a directory) on an ephemeral 127.0.0.1 port.

    Faults, per path, each for the first `times` requests of that path (then it is served):
      not_found(path)             -> 404 on every request
      fail(path, times, status)   -> `status` (default 500) with a short body
      cut(path, times, keep)      -> full Content-Length, only `keep` bytes, then close
      redirect(path, location)    -> 302 to `location` on every request
    `count(path)` is how many requests reached `path`; `requests[path]` holds their headers.
    Range requests of the form "bytes=N-" get a 206 unless `ranges=False`.
    `delay` (seconds) is slept before every answer, to stand in for a distant host.
    """

    def __init__(
        self,
        files: Mapping[str, bytes] | str | Path | None = None,
        *,
        ranges: bool = True,
        delay: float = 0.0,
    ) -> None:
        self.root: Path | None = None
        self.files: dict[str, bytes] = {}
        if isinstance(files, (str, Path)):
            self.root = Path(files)
        elif files:
            self.files = {_norm(k): bytes(v) for k, v in files.items()}
        self.ranges = ranges
        self.delay = delay
        self.requests: dict[str, list[dict[str, str]]] = {}
        self._missing: set[str] = set()
        self._redirects: dict[str, str] = {}  # path -> Location
        self._fail: dict[str, tuple[int, int]] = {}  # path -> (times left, status)
        self._cut: dict[str, tuple[int, int | None]] = {}  # path -> (times left, bytes kept)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- configuration -------------------------------------------------------------------

    def add(self, path: str, data: bytes) -> str:
        """Serve `data` at `path`; returns its URL."""
        self.files[_norm(path)] = bytes(data)
        return self.url(path)

    def not_found(self, path: str) -> None:
        self._missing.add(_norm(path))

    def redirect(self, path: str, location: str) -> None:
        self._redirects[_norm(path)] = location

    def fail(self, path: str, times: int = 1, status: int = 500) -> None:
        self._fail[_norm(path)] = (times, status)

    def cut(self, path: str, times: int = 1, keep: int | None = None) -> None:
        """Close the connection after `keep` bytes of the body (default: half of it)."""
        self._cut[_norm(path)] = (times, keep)

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.requests.get(_norm(path), []))

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter({p: len(r) for p, r in self.requests.items()})

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LocalServer is not started")
        return self._httpd.server_address[1]

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(_norm(path))}"

    def start(self) -> LocalServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- used by the handler -------------------------------------------------------------

    def _record(self, path: str, headers: dict[str, str]) -> tuple[str, object]:
        """Log the request and decide what to answer: ("404"|"redirect"|"fail"|"cut"|"ok",
        detail)."""
        with self._lock:
            self.requests.setdefault(path, []).append(headers)
            if path in self._missing:
                return "404", None
            if path in self._redirects:
                return "redirect", self._redirects[path]
            times, status = self._fail.get(path, (0, 0))
            if times > 0:
                self._fail[path] = (times - 1, status)
                return "fail", status
            times, keep = self._cut.get(path, (0, None))
            if times > 0:
                self._cut[path] = (times - 1, keep)
                return "cut", keep
        return "ok", None

    def _content(self, path: str) -> bytes | None:
        if self.root is None:
            return self.files.get(path)
        root = self.root.resolve()
        target = (root / path).resolve()
        if root not in target.parents or not target.is_file():
            return None
        return target.read_bytes()


class _Handler(BaseHTTPRequestHandler):
    owner: LocalServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = _norm(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        action, detail = self.owner._record(path, dict(self.headers.items()))
        if self.owner.delay:
            time.sleep(self.owner.delay)
        if action == "redirect":
            self.send_response(302)
            self.send_header("Location", detail)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        body = self.owner._content(path)
        if action == "404" or body is None:
            return self._plain(404, b"not found\n")
        if action == "fail":
            return self._plain(detail, b"injected failure\n")

        status, start = 200, 0
        match = _RANGE_RE.fullmatch(self.headers.get("Range", "").strip())
        if match and self.owner.ranges:
            start = int(match.group(1))
            if start >= len(body):
                return self._plain(416, b"range not satisfiable\n")
            status = 206
        part = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes" if self.owner.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Connection", "close")
        self.end_headers()
        if action == "cut":
            keep = len(part) // 2 if detail is None else min(detail, len(part) - 1)
            self.wfile.write(part[:keep])
            self.wfile.flush()
            # Promised len(part) bytes, sent fewer: the client sees the connection end early.
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(part)
        self.close_connection = True

    def _plain(self, status: int, text: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(text)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean; tests inspect owner.requests instead


def _norm(path: str) -> str:
    return path.lstrip("/")


def dead_url(path: str = "file.bin") -> str:
    """A URL on 127.0.0.1 whose port has nothing listening (connection refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port was just free and nothing else binds it so soon: refusal is near certain.
    return f"http://127.0.0.1:{port}/{urllib.parse.quote(_norm(path))}"


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """An empty running LocalServer; add files with `http_server.add(path, data)`."""
    with LocalServer() as server:
        yield server
