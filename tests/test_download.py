"""cnnlab.download against a real HTTP server on 127.0.0.1, file:// URLs and local paths."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from httpserver import LocalServer, dead_url

from cnnlab.download import download
from cnnlab.errors import CnnlabError

# Several reads of the response, so a cut lands mid-body. Seeded, not os.urandom: the test ids
# carry its md5, and parallel workers (pytest-xdist) must collect the same ids.
DATA = random.Random(0).randbytes(300_000)
MD5 = hashlib.md5(DATA).hexdigest()
FAST = {"backoff": 0.01, "timeout": 5.0, "progress": False}


@pytest.fixture
def server() -> LocalServer:
    with LocalServer({"data/archive.tar.gz": DATA}) as srv:
        yield srv


def leftovers(directory: Path, keep: str = "") -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_success_verifies_md5(server, tmp_path):
    dest = tmp_path / "sub" / "archive.tar.gz"
    result = download(server.url("data/archive.tar.gz"), dest, MD5, **FAST)
    assert result == dest
    assert dest.read_bytes() == DATA
    assert server.count("data/archive.tar.gz") == 1
    assert leftovers(dest.parent) == ["archive.tar.gz"]


def test_md5_none_skips_verification(server, tmp_path):
    dest = download(server.url("data/archive.tar.gz"), tmp_path / "a", None, **FAST)
    assert dest.read_bytes() == DATA


def test_uppercase_md5_accepted(server, tmp_path):
    dest = download(server.url("data/archive.tar.gz"), tmp_path / "a", MD5.upper(), **FAST)
    assert dest.read_bytes() == DATA


def test_md5_mismatch_fails_and_leaves_nothing(server, tmp_path):
    url = server.url("data/archive.tar.gz")
    wrong = "0" * 32
    with pytest.raises(CnnlabError) as info:
        download(url, tmp_path / "a", wrong, **FAST)
    assert str(info.value) == f"md5 mismatch for {url}: expected {wrong}, got {MD5}"
    assert leftovers(tmp_path) == []
    assert server.count("data/archive.tar.gz") == 1  # a wrong checksum is not retried


def test_404_fails_without_retry(server, tmp_path):
    url = server.url("missing.bin")
    with pytest.raises(CnnlabError, match=f"^HTTP 404 Not Found for {url}$"):
        download(url, tmp_path / "a", None, **FAST)
    assert server.count("missing.bin") == 1
    assert leftovers(tmp_path) == []


def test_injected_404_on_existing_path(server, tmp_path):
    server.not_found("data/archive.tar.gz")
    with pytest.raises(CnnlabError, match="HTTP 404"):
        download(server.url("data/archive.tar.gz"), tmp_path / "a", MD5, **FAST)
    assert server.count("data/archive.tar.gz") == 1


def test_403_not_retried(server, tmp_path):
    server.fail("data/archive.tar.gz", times=5, status=403)
    with pytest.raises(CnnlabError, match="HTTP 403"):
        download(server.url("data/archive.tar.gz"), tmp_path / "a", MD5, **FAST)
    assert server.count("data/archive.tar.gz") == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_status_twice_then_success(server, tmp_path, status):
    server.fail("data/archive.tar.gz", times=2, status=status)
    dest = download(server.url("data/archive.tar.gz"), tmp_path / "a", MD5, **FAST)
    assert dest.read_bytes() == DATA
    assert server.count("data/archive.tar.gz") == 3


def test_500_every_time_gives_up(server, tmp_path):
    server.fail("data/archive.tar.gz", times=100)
    url = server.url("data/archive.tar.gz")
    with pytest.raises(CnnlabError) as info:
        download(url, tmp_path / "a", MD5, retries=2, **FAST)
    assert str(info.value) == (
        f"could not download {url} after 3 attempts: HTTP 500 Internal Server Error"
    )
    assert server.count("data/archive.tar.gz") == 3
    assert leftovers(tmp_path) == []


def test_cut_mid_body_once_then_resumes(server, tmp_path):
    server.cut("data/archive.tar.gz", times=1, keep=100_000)
    dest = download(server.url("data/archive.tar.gz"), tmp_path / "a", MD5, **FAST)
    assert dest.read_bytes() == DATA
    first, second = server.requests["data/archive.tar.gz"]
    assert "Range" not in first
    assert second["Range"] == "bytes=100000-"  # only the missing tail was fetched again


def test_cut_mid_body_without_range_support_starts_over(tmp_path):
    with LocalServer({"a.bin": DATA}, ranges=False) as srv:
        srv.cut("a.bin", times=2)
        dest = download(srv.url("a.bin"), tmp_path / "a", MD5, **FAST)
        assert srv.count("a.bin") == 3
    assert dest.read_bytes() == DATA


def test_cut_every_time_gives_up(server, tmp_path):
    server.cut("data/archive.tar.gz", times=100, keep=1000)
    url = server.url("data/archive.tar.gz")
    with pytest.raises(CnnlabError, match=f"could not download {url} after 2 attempts: .*closed"):
        download(url, tmp_path / "a", MD5, retries=1, **FAST)
    assert leftovers(tmp_path) == []


def test_server_down(tmp_path):
    url = dead_url("archive.tar.gz")
    with pytest.raises(CnnlabError) as info:
        download(url, tmp_path / "a", MD5, retries=3, **FAST)
    message = str(info.value)
    assert message.startswith(f"could not download {url} after 4 attempts: ")
    assert "refused" in message.lower()
    assert "\n" not in message
    assert leftovers(tmp_path) == []


def test_file_url_and_local_paths(tmp_path, monkeypatch):
    source = tmp_path / "src dir" / "archive.tar.gz"
    source.parent.mkdir()
    source.write_bytes(DATA)
    out = tmp_path / "out"

    assert download(source.as_uri(), out / "1", MD5, progress=False).read_bytes() == DATA
    assert download(str(source), out / "2", MD5, progress=False).read_bytes() == DATA
    monkeypatch.chdir(tmp_path)
    assert download("src dir/archive.tar.gz", out / "3", MD5, progress=False).read_bytes() == DATA
    assert leftovers(out) == ["1", "2", "3"]


def test_local_md5_mismatch(tmp_path):
    source = tmp_path / "archive.tar.gz"
    source.write_bytes(b"not the archive")
    with pytest.raises(CnnlabError, match=f"md5 mismatch for {source}: expected {MD5}"):
        download(str(source), tmp_path / "out" / "a", MD5, progress=False)
    assert leftovers(tmp_path / "out") == []


def test_missing_local_source(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(CnnlabError, match=f"^source not found: {missing}$"):
        download(str(missing), tmp_path / "a", None, progress=False)
    with pytest.raises(CnnlabError, match="source not found"):
        download(missing.as_uri(), tmp_path / "a", None, progress=False)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.tar.gz", "data:text/plain,hello", "s3://bucket/a.tar.gz"]
)
def test_unsupported_scheme(url, tmp_path):
    scheme = url.split(":")[0]
    with pytest.raises(CnnlabError, match=f"unsupported URL scheme '{scheme}'.*http.*file"):
        download(url, tmp_path / "a", None, progress=False)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("md5", ["", "abc", "g" * 32, "0" * 31, "0" * 33, MD5 + " x"])
def test_bad_md5_string(md5, tmp_path):
    with pytest.raises(CnnlabError, match="md5 must be 32 hexadecimal"):
        download(dead_url(), tmp_path / "a", md5, progress=False)


def test_existing_dest_replaced_only_on_success(server, tmp_path):
    dest = tmp_path / "archive.tar.gz"
    dest.write_bytes(b"old copy")
    url = server.url("data/archive.tar.gz")

    with pytest.raises(CnnlabError, match="md5 mismatch"):
        download(url, dest, "f" * 32, **FAST)
    server.fail("data/archive.tar.gz", times=100)
    with pytest.raises(CnnlabError, match="could not download"):
        download(url, dest, MD5, retries=1, **FAST)
    with pytest.raises(CnnlabError, match="404"):
        download(server.url("other"), dest, MD5, **FAST)
    assert dest.read_bytes() == b"old copy"
    assert leftovers(tmp_path) == ["archive.tar.gz"]

    server.fail("data/archive.tar.gz", times=0)
    download(url, dest, MD5, **FAST)
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["archive.tar.gz"]


def test_progress_bar_in_bytes(server, tmp_path, capsys):
    download(server.url("data/archive.tar.gz"), tmp_path / "a", MD5, desc="cifar", backoff=0.01)
    err = capsys.readouterr().err
    assert "cifar" in err and "B" in err
    download(server.url("data/archive.tar.gz"), tmp_path / "b", MD5, **FAST)
    assert capsys.readouterr().err == ""


def test_directory_server(tmp_path):
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.bin").write_bytes(DATA)
    (tmp_path / "outside.bin").write_bytes(DATA)
    with LocalServer(root) as srv:
        dest = download(srv.url("sub/x.bin"), tmp_path / "x.bin", MD5, **FAST)
        with pytest.raises(CnnlabError, match="HTTP 404"):  # nothing outside the root is served
            download(srv.url("../outside.bin"), tmp_path / "y", None, **FAST)
    assert dest.read_bytes() == DATA
