"""Atomic file writes: a temporary file beside the target, then a rename over it.

Readers never see a partial file, and an interrupted write leaves the previous version in place. The
temporary file is created in the target's folder (so the rename is atomic on the same file system)
with mode ``"x"``, which gives it the umask's permissions (``tempfile.mkstemp`` would make it 0600), as
``cp``, dcmtk's ``storescp`` and pynetdicom write theirs: who may read the files (received instances
hold patient data) is the process's umask (``UMask=0077`` in a systemd unit), the same for every file.
With ``fsync=True`` a write is durable: the file's data, its folder's entry (after the rename) and any
folder created for it are flushed to disk before the call returns; this is what the DICOM node needs
before it acknowledges a C-STORE, and what the results, the resume state and the FHIR Bundles use.

This module is the package's one atomic writer (bytes, text, JSON, CSV; DICOM datasets through
:func:`pneumonia_monai.dicom.writer.write_dataset_atomic`, which writes with :func:`atomic_open`).
A process killed while writing (SIGKILL) leaves its ``.<name>.<32 hex digits>.tmp`` behind: the owner
of a folder removes them with :func:`remove_stale_temporaries` when no writer can be running (the
batch runner does, holding its output folder's lock).

CSV cells are written through :func:`csv_cell`: a cell that a spreadsheet would take for a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return; OWASP "CSV injection") is
written with a leading apostrophe, and so is a cell that starts with an apostrophe, so that
:func:`csv_value` gives back exactly the original text. Plain numbers (``-0.5``) are left as they are.
Importing this module imports neither torch nor MONAI.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

#: Name of a temporary file of :func:`atomic_open`: ``.<target name>.<uuid4 hex>.tmp``.
TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
#: First characters that make a spreadsheet read a cell as a formula (OWASP), and the escape itself.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries to disk (a file renamed or created in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir_durable(folder: str | Path) -> bool:
    """Create ``folder`` and any missing parents, each fsynced into its parent; return whether any was new."""
    folder = Path(folder)
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir()
        except FileExistsError:
            continue
        fsync_dir(created.parent)
    return bool(missing)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it over ``path`` when the block succeeds.

    Args:
        path: the file to (re)write; missing parent folders are created.
        mode: ``"w"`` (text, UTF-8, no newline translation) or ``"wb"``.
        fsync: make the write durable (see the module docstring): the data before the rename, the folder
            after it, and the folders created for it.

    Raises:
        ValueError: for a mode other than ``"w"`` or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if fsync:
        make_dir_durable(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    binary = mode == "wb"
    try:
        with tmp.open(
            "xb" if binary else "x", encoding=None if binary else "utf-8", newline=None if binary else ""
        ) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
    logger.debug("wrote %s", path)


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``.

    Raises:
        TypeError: if ``data`` is not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int = 2, fsync: bool = False) -> Path:
    """Write ``obj`` as strict JSON (no NaN) with a final newline to ``path`` atomically; return ``path``."""
    text = json.dumps(obj, indent=indent, allow_nan=False) + "\n"  # serialise first: no file on error
    with atomic_open(path, "w", fsync=fsync) as fh:
        fh.write(text)
    return Path(path)


def write_csv_atomic(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]], *, fsync: bool = False
) -> Path:
    """Write a header and ``rows`` (dictionaries keyed by ``columns``) as CSV to ``path`` atomically."""
    with atomic_open(path, "w", fsync=fsync) as fh:
        write_csv(fh, columns, rows)
    return Path(path)


def csv_cell(value: Any) -> str:
    """Return ``value`` as a CSV cell that no spreadsheet runs as a formula (see the module docstring)."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _NUMBER.match(text):
        return "'" + text
    return text


def csv_value(cell: str) -> str:
    """Undo :func:`csv_cell`: drop the apostrophe it put before a cell."""
    if cell.startswith("'") and cell[1:2] and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def write_csv(handle: IO[str], columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a header and ``rows`` as CSV to an open text handle, every cell through :func:`csv_cell`.

    The one CSV writer of the package (files, and ``select``'s standard output).
    """
    writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_cell(value) for key, value in row.items()})


def remove_stale_temporaries(*folders: str | Path) -> int:
    """Remove the temporary files :func:`atomic_open` left in ``folders`` (not recursive); return how many.

    Call it only where no other process can be writing into the folders (the caller holds their lock):
    a live writer's temporary file looks the same.
    """
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if TEMPORARY_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
                logger.debug("removed the stale temporary file %s", entry.path)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run", removed)
    return removed
