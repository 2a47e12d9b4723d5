"""Outputs appear whole or not at all."""

import pytest

from cnnlab.atomic import atomic_dir, atomic_path, write_text


def test_atomic_path_renames_on_success_and_cleans_up_on_failure(tmp_path):
    final = tmp_path / "out" / "file.bin"
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"new")
        assert not final.exists()
    assert final.read_bytes() == b"new"

    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"new"  # the old output survives a failed rewrite
    assert sorted(p.name for p in final.parent.iterdir()) == ["file.bin"]


def test_atomic_dir_replaces_a_whole_directory_or_nothing(tmp_path):
    final = tmp_path / "prepared"
    with atomic_dir(final) as tmp:
        (tmp / "a.npy").write_bytes(b"1")
    with atomic_dir(final) as tmp:
        (tmp / "b.npy").write_bytes(b"2")
    assert [p.name for p in final.iterdir()] == ["b.npy"]

    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "c.npy").write_bytes(b"3")
        raise RuntimeError("disk full")
    assert [p.name for p in final.iterdir()] == ["b.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_write_text(tmp_path):
    write_text(tmp_path / "m.json", "{}\n")
    assert (tmp_path / "m.json").read_text() == "{}\n"
