"""Atomic writes: all or nothing, normal permissions, no temporary files left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pneumonia_monai.atomic import atomic_open, write_bytes_atomic, write_csv_atomic, write_json_atomic


def test_writes_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2}, indent=4, fsync=True)
    assert json.loads(target.read_text()) == {"a": 2}
    write_csv_atomic(tmp_path / "rows.csv", ["x", "y"], [{"x": 1, "y": "b,c"}])
    assert (tmp_path / "rows.csv").read_text() == 'x,y\n1,"b,c"\n'
    write_bytes_atomic(tmp_path / "raw.bin", b"\x00\x01")
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_failure_keeps_the_previous_version(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("partial")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    with pytest.raises(ValueError, match=r"(?i)nan"):
        write_json_atomic(target, {"x": float("nan")})  # strict JSON; nothing written
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "f.png", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Record every fsync as (what it flushed, whether a folder), still doing it."""
    done: list[tuple[str, bool]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        done.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISDIR(mode)))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return done


def test_a_durable_write_flushes_the_file_then_its_folder_and_new_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _record_fsyncs(monkeypatch)
    target = tmp_path / "a" / "b" / "x.json"
    write_json_atomic(target, {"k": 1}, fsync=True)
    assert json.loads(target.read_text()) == {"k": 1}
    files = [path for path, is_dir in done if not is_dir]
    folders = [path for path, is_dir in done if is_dir]
    assert len(files) == 1 and Path(files[0]).parent == target.parent  # the temporary file, before the rename
    # a and b were created (their parents fsynced), and b after the rename
    assert folders == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]


def test_a_plain_write_does_not_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = _record_fsyncs(monkeypatch)
    write_bytes_atomic(tmp_path / "new" / "x.bin", b"data")
    assert done == []


def test_bytes_only(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        write_bytes_atomic(tmp_path / "x.bin", "text")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
