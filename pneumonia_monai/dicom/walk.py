"""Walk the inputs of a run: every entry under its folders, in a stable order, and open regular files only.

:func:`iter_input_files` yields every entry found (not only regular files), so that each gets a decision;
links are never followed inside a folder and a named pipe is never opened (:func:`open_regular_file`).
Operating-system metadata (``.DS_Store``, ``__MACOSX/``, ...) is yielded too: its decision is
:func:`pneumonia_monai.names.is_junk`'s, made by :func:`pneumonia_monai.triage.decide_file`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

#: The longest path the system resolves, in bytes (Linux: 4096).
PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096


def open_regular_file(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file: never through a link, never a pipe.

    The file is opened with ``O_NOFOLLOW`` and ``O_NONBLOCK`` (so a named pipe does not block) and checked
    with ``fstat`` on the open descriptor (no race between the check and the open).

    Raises:
        OSError: if it cannot be opened, is a symbolic link (``ELOOP``) or is not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({file_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    """Name the kind of a file from its ``st_mode``: ``regular file``, ``folder``, ``named pipe``, ..."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def os_error_reason(exc: OSError, path: str | Path) -> str:
    """The reason for a row about ``path`` that ``exc`` made unreadable (names a path over ``PATH_MAX``)."""
    if exc.errno == errno.ENAMETOOLONG or len(os.fsencode(Path(path).absolute())) >= PATH_MAX:
        return f"path longer than PATH_MAX ({PATH_MAX} bytes)"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def iter_input_files(inputs: Sequence[str | Path]) -> Iterator[tuple[Path, Path]]:
    """Yield ``(entry, root)`` for every entry under the inputs: inputs in order, sorted within a folder.

    Every entry found is yielded, not only regular files, so that each gets a decision
    (:func:`pneumonia_monai.dicom.selection.entry_problem`): symbolic links (to files or folders: not
    followed), named pipes and other special files, and folders that cannot be read (or whose path is
    longer than ``PATH_MAX``). An input named on the command line is followed when it is a link (a file
    input is replaced by its target). An entry reached twice (overlapping inputs) is yielded once.

    Raises:
        FileNotFoundError: if an input does not exist.
    """
    seen: set[str] = set()
    for item in inputs:
        top = Path(item)
        if not top.exists():
            raise FileNotFoundError(f"input not found: {top}")
        if top.is_file():
            if top.is_symlink():  # named by the user: its target is the input
                top = Path(os.path.realpath(top))
            candidates: Iterable[tuple[Path, Path]] = [(top, top.parent)]
        else:
            candidates = ((p, top) for p in _walk_sorted(top))
        for path, root in candidates:
            # The entry's own name is not resolved: a link or a loop is the entry itself.
            key = str(Path(os.path.realpath(path.parent)) / path.name)
            if key in seen:
                continue
            seen.add(key)
            yield path, root


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:  # a path longer than PATH_MAX: its folder gets the row
        return False


def _walk_sorted(root: Path) -> list[Path]:
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        if exc.filename is not None:
            found.append(Path(os.fsdecode(exc.filename)))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        base = Path(folder)
        found += [base / name for name in files]
        # os.walk lists links to folders with the folders and does not enter them: they get a row too
        found += [base / name for name in dirs if _is_link(base / name)]
    return sorted(found, key=lambda p: p.relative_to(root).parts)
