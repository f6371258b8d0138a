r"""File names as text for tables: lossless for names that are not UTF-8.

A POSIX file name is bytes; Python hands names that are not valid UTF-8 over as ``str`` with lone
surrogates (``surrogateescape``: byte ``0xNN`` becomes ``U+DCNN``), which no UTF-8 CSV or JSON file
can hold. :func:`escape_name` writes such a name as text, by this rule:

- each byte that is not part of valid UTF-8 becomes ``\xNN`` (two lower-case hex digits);
- each backslash becomes ``\\`` (two backslashes), so that an escape cannot be confused with a
  name that holds the characters ``\xNN``;
- everything else is written as it is.

:func:`unescape_name` undoes it exactly, so ``os.fsencode(unescape_name(escape_name(name)))`` gives
the original bytes. A UTF-8 name without a backslash is written unchanged. :func:`printable` is the
one-way version for free text that may quote a name (a reason): undecodable bytes become ``\xNN``,
nothing else changes.

:func:`is_junk` is the one rule for the operating systems' metadata files found in copied folders and
unpacked archives (``__MACOSX/``, AppleDouble ``._*`` files, ``.DS_Store``, ``Thumbs.db``,
``desktop.ini``): every walker of input folders skips them with :data:`JUNK_REASON`.
"""

from __future__ import annotations

import re
from pathlib import PurePath

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")

#: Names of the metadata files and folders that macOS Finder and Windows Explorer leave behind.
JUNK_NAMES: frozenset[str] = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
#: How a macOS AppleDouble (resource fork) file's name starts.
APPLEDOUBLE_PREFIX = "._"
#: The reason given for a junk file in every table of rows.
JUNK_REASON = "junk file (macOS/Windows metadata)"


def _is_escaped_byte(char: str) -> bool:
    return "\udc80" <= char <= "\udcff"


def escape_name(name: str) -> str:
    """Return ``name`` (possibly holding ``surrogateescape`` characters) as lossless UTF-8-safe text."""
    if name.isascii() and "\\" not in name:
        return name
    out = []
    for char in name:
        if _is_escaped_byte(char):
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


def unescape_name(text: str) -> str:
    """Undo :func:`escape_name`: return the name as Python's file system functions take it."""

    def one(match: re.Match[str]) -> str:
        token = match.group(1)
        return "\\" if token == "\\" else chr(0xDC00 + int(token[1:], 16))

    return _ESCAPE.sub(one, text)


def printable(text: str) -> str:
    r"""Return ``text`` with each ``surrogateescape`` character written as ``\xNN`` (one-way)."""
    if text.isascii() or not any(_is_escaped_byte(c) for c in text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if _is_escaped_byte(c) else c for c in text)


def is_junk(rel: str | PurePath) -> bool:
    """Whether a path relative to its input folder is operating-system metadata.

    It is when one of its parts (the file's name or a folder above it) is one of :data:`JUNK_NAMES` or
    starts with :data:`APPLEDOUBLE_PREFIX`. Other hidden files (``.gitignore``, ``.hidden.dcm``) are not junk:
    they are decided by their content like any file.

    Args:
        rel: the relative path, as a path or as text with ``/`` separators.
    """
    parts = rel.split("/") if isinstance(rel, str) else PurePath(rel).parts
    return any(part in JUNK_NAMES or part.startswith(APPLEDOUBLE_PREFIX) for part in parts)
