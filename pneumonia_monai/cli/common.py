"""Pieces every command shares: verbosity flags, logging set-up and exit codes.

The library only logs through ``logging.getLogger(__name__)``; handlers are configured here, by the
command line, and nowhere else. Here too patient values are kept out of every log line
(:mod:`pneumonia_monai.redaction`), and Python warnings (pydicom's, which quote values) go through
the same handler.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from typing import ParamSpec

from pneumonia_monai.redaction import PhiRedactingFilter, install_phi_redaction

P = ParamSpec("P")

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
    install_phi_redaction()
    logging.captureWarnings(True)
    root = logging.getLogger("pneumonia_monai")
    root.setLevel(level)
    ours = [h for h in root.handlers if getattr(h, "_pneumonia_monai", False)]
    if not ours:
        new = logging.StreamHandler(sys.stderr)
        new.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        new.addFilter(PhiRedactingFilter())
        new._pneumonia_monai = True  # type: ignore[attr-defined]  # our mark, found again by a later call
        root.addHandler(new)
        ours = [new]
    for handler in ours:  # a later command in the same process writes to the stderr of its own time
        if isinstance(handler, logging.StreamHandler) and handler.stream is not sys.stderr:
            with handler.lock or contextlib.nullcontext():  # not setStream: it flushes the old, maybe closed
                handler.stream = sys.stderr
    warnings_logger = logging.getLogger("py.warnings")
    for handler in ours:
        if handler not in warnings_logger.handlers:
            warnings_logger.addHandler(handler)
    warnings_logger.propagate = False
    for handler in root.handlers:
        handler.setLevel(level)


#: Default of ``--max-pixels``: :data:`pneumonia_monai.dicom.limits.MAX_PIXELS` (not imported here, so that
#: ``--help`` does not load pydicom; a test keeps the two equal).
DEFAULT_MAX_PIXELS = 8192 * 8192


def add_limit_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-pixels``: the decoded- and inflated-size budget of :mod:`pneumonia_monai.dicom.limits`."""
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse, before decoding, an image of more than N pixels (rows x columns x frames, from the "
        "DICOM header and from the JPEG / JPEG-LS / JPEG 2000 codestream; also Pillow's limit for "
        "JPEG/PNG) or of more than 2 bytes per pixel decoded; a deflated DICOM data set may inflate "
        f"to 2N bytes plus 16 MiB (default {DEFAULT_MAX_PIXELS} = 8192 x 8192)",
    )


def apply_limit_args(args: argparse.Namespace) -> None:
    """Put the parsed ``--max-pixels`` in force for this process."""
    from pneumonia_monai.dicom import limits

    limits.set_max_pixels(int(args.max_pixels))


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def positive_int(text: str) -> int:
    """Argparse type: an integer of 1 or more."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """Argparse type: an integer of 0 or more."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """Argparse type: a number above 0."""
    value = float(_number(text, float))
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """Argparse type: a finite number of 0 or more."""
    value = float(_number(text, float))
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return value


def unit_interval(text: str) -> float:
    """Argparse type: a number in [0, 1] (a probability or a threshold)."""
    value = float(_number(text, float))
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def fraction_below_one(text: str) -> float:
    """Argparse type: a number in [0, 1) (a share that must leave something over)."""
    value = float(_number(text, float))
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def returns_exit_status(main: Callable[P, int]) -> Callable[P, int]:
    """Make a command's ``main(argv)`` return argparse's exit status (2, or 0 for ``--help``).

    argparse raises :class:`SystemExit` on bad usage; a ``main`` that tests and other programs call
    directly should return the status instead, as the commands' contract says. The wrapper keeps the
    signature of ``main`` (``argv`` and its default), for callers and for the type checker.
    """

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except SystemExit as exc:
            if isinstance(exc.code, int):
                return exc.code
            return EXIT_OK if exc.code is None else EXIT_USAGE

    return wrapper
