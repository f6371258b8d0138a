"""``pneumonia-monai select``: triage folders of films, one row per file with its status and reason.

DICOM files (by header) go through the selection rules; JPEG/PNG/TIFF pictures are taken as frontal chest
films; NIfTI, MetaImage and NRRD files are decided from their header (one 2-D film is selected; volumes of
more slices, 4-D and vector files are skipped with the reason), as ``infer`` decides them.

Examples::

    pneumonia-monai select /archive/incoming
    pneumonia-monai select /archive/a /archive/b --rules site_rules.yaml --output decisions.csv

Rows hold the path relative to its input, the status (``selected``, ``skipped``, ``error``), the reason, the
Study/Series/SOP Instance UIDs, the SOP Class, Modality, Body Part Examined and View Position: no names, ids,
dates or accession numbers.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from pneumonia_monai.atomic import write_csv, write_csv_atomic
from pneumonia_monai.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    add_limit_args,
    add_verbosity_args,
    apply_limit_args,
    configure_logging,
    returns_exit_status,
)
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import DECISION_COLUMNS, ERROR
from pneumonia_monai.triage import select_files

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Without a terminal, a progress line is logged every this many items (and at the end).
PROGRESS_EVERY = 500


def progress_wrapper(desc: str, *, quiet: bool = False) -> Callable[[Iterable[T]], Iterable[T]]:
    """Return a function that wraps an iterable to show progress.

    On a terminal it is a ``tqdm`` bar on stderr; otherwise an INFO line every :data:`PROGRESS_EVERY` items.

    Args:
        desc: what is being counted, e.g. ``"files"``.
        quiet: show nothing.
    """

    def wrap(items: Iterable[T]) -> Iterable[T]:
        if quiet:
            return items
        if sys.stderr.isatty():
            return tqdm(items, desc=desc, unit="", file=sys.stderr)
        return _logged(items, desc)

    return wrap


def _logged(items: Iterable[T], desc: str) -> Iterator[T]:
    total = len(items) if isinstance(items, Sized) else None
    count = 0
    for count, item in enumerate(items, start=1):
        if count % PROGRESS_EVERY == 0:
            logger.info("%s: %d%s", desc, count, f"/{total}" if total else "")
        yield item
    if count % PROGRESS_EVERY:
        logger.info("%s: %d%s done", desc, count, f"/{total}" if total else "")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``select`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai select",
        description="Decide, for every file under the inputs, whether it is a chest frontal film the model "
        "can read (DICOM CR/DX by the rules; pictures; NIfTI/MetaImage/NRRD films of one slice), and why "
        "(headers only; pixel data is not read).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="files or folders")
    parser.add_argument(
        "--rules",
        type=Path,
        default=None,
        metavar="FILE",
        help="site rules YAML (keys it omits keep the packaged defaults)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="CSV",
        help="write the decisions here (default: print them as CSV on stdout)",
    )
    add_limit_args(parser)
    add_verbosity_args(parser)
    return parser


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pneumonia-monai select``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    apply_limit_args(args)
    try:
        rules = SelectionRules.from_file(args.rules) if args.rules is not None else SelectionRules.default()
        result = select_files(args.inputs, rules, progress=progress_wrapper("files", quiet=args.quiet))
    except (FileNotFoundError, ValueError, TypeError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    rows = [decision.as_row() for decision in result.decisions]
    if args.output is not None:
        try:
            write_csv_atomic(args.output, DECISION_COLUMNS, rows)
        except OSError as exc:
            logger.error("cannot write %s: %s", args.output, exc)
            return EXIT_FAILURES
        logger.info("wrote %d decision(s) to %s", len(rows), args.output)
    else:
        buffer = io.StringIO()
        write_csv(buffer, DECISION_COLUMNS, rows)
        sys.stdout.write(buffer.getvalue())
    counts = result.counts()
    return EXIT_FAILURES if counts[ERROR] else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
