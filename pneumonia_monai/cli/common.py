"""Pieces every command shares: verbosity flags, logging set-up and exit codes.

The library only logs through ``logging.getLogger(__name__)``; handlers are configured here, by the
command line, and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import sys

#: Exit status: every file was ``ok`` or ``skipped``.
EXIT_OK = 0
#: Exit status: at least one file ended in ``error``.
EXIT_FAILURES = 1
#: Exit status: bad usage, or an input the command cannot work with at all (an unusable bundle, say).
EXIT_USAGE = 2


def add_verbosity_args(parser: argparse.ArgumentParser) -> None:
    """Add the ``-v/--verbose`` and ``-q/--quiet`` flags (pynetdicom style) to ``parser``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def configure_logging(args: argparse.Namespace) -> None:
    """Send the package's log records to stderr at the level the verbosity flags ask for."""
    level = logging.INFO
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    root = logging.getLogger("pneumonia_monai")
    root.setLevel(level)
    if not any(getattr(h, "_pneumonia_monai", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._pneumonia_monai = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        handler.setLevel(level)
