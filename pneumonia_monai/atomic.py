"""Atomic file writes: a temporary file beside the target, then a rename over it.

Readers never see a partial file, and an interrupted write leaves the previous version in place. The
temporary file is created in the target's folder (so the rename is atomic on the same file system)
with mode ``"x"``, which gives it the umask's permissions (``tempfile.mkstemp`` would make it 0600).
Importing this module imports neither torch nor MONAI.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; move it over ``path`` when the block succeeds.

    Args:
        path: the file to (re)write; missing parent folders are created.
        mode: ``"w"`` (text, UTF-8, no newline translation) or ``"wb"``.
        fsync: flush the data to disk before the rename (for files whose loss after a crash matters).

    Raises:
        ValueError: for a mode other than ``"w"`` or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
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
    logger.debug("wrote %s", path)


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
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
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)
