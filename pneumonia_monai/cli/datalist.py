"""``pneumonia-monai datalist``: scan a Kaggle/Mendeley tree and write a MONAI datalist JSON."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pneumonia_monai.atomic import write_json_atomic
from pneumonia_monai.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_verbosity_args,
    configure_logging,
    returns_exit_status,
)
from pneumonia_monai.data.datalist import build_datalist
from pneumonia_monai.data.kaggle import scan_kaggle_tree

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``pneumonia-monai datalist``."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai datalist",
        description=(
            "Scan a Kaggle/Mendeley chest X-ray tree and write a datalist (training / validation / test) "
            "split by patient. Kaggle's val/ folder is folded into the training pool; test/ stays test."
        ),
    )
    parser.add_argument(
        "root", type=Path, help="folder holding train/ (and val/, test/) or NORMAL/ and PNEUMONIA/"
    )
    parser.add_argument("--output", "-o", type=Path, required=True, help="datalist JSON to write")
    parser.add_argument(
        "--num-classes",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: normal/pneumonia; 3: normal/bacterial/viral",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2, help="fraction of the pool for validation")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    add_verbosity_args(parser)
    return parser


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pneumonia-monai datalist``; image paths are written relative to the output's folder."""
    args = build_parser().parse_args(argv)
    configure_logging(args)
    try:
        records = scan_kaggle_tree(args.root)
        datalist = build_datalist(
            records,
            label_mode="binary" if args.num_classes == 2 else "subtype",
            val_fraction=args.val_fraction,
            seed=args.seed,
            relative_to=args.output.resolve().parent,
        )
    except (FileNotFoundError, ValueError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    write_json_atomic(args.output, datalist)
    logger.info("wrote %s: %s", args.output, {k: len(v) for k, v in datalist.items()})
    return EXIT_OK
