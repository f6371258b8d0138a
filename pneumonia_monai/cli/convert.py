r"""``pneumonia-monai convert``: Kaggle JPEG tree -> DICOM studies, or DICOM + labels CSV -> datalist.

Examples::

    pneumonia-monai convert kaggle-to-dicom chest_xray/ dicom_out/ --compression jpeg2000
    pneumonia-monai convert dicom-to-datalist /archive/cxr labels.csv datalist.json --key study_uid \\
        --val-fraction 0.2 --seed 0 --salt-file ~/.pneumonia_salt --report datalist_report.csv

``kaggle-to-dicom`` writes ``OUT/<patient>/<study>/<series>/<sop>.dcm``, ``OUT/datalist.json``,
``OUT/labels.csv`` (one row per converted film: study_uid, sop_uid, label, subtype, kaggle_split: the
labels CSV ``dicom-to-datalist`` reads, with ``--key sop_uid`` or ``--key study_uid``) and
``OUT/conversion.csv`` (one row per source file: source, output, status, reason).

``dicom-to-datalist`` reads a labels CSV with a key column (``study_uid``, ``sop_uid`` or
``accession_number``, after ``--key``), a label column (``--label-column``, default ``label``: normal,
pneumonia, bacterial or viral) and optionally a ``subtype`` column; see
:func:`pneumonia_monai.data.dicom_datalist.read_labels`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pneumonia_monai.cli.common import (
    EXIT_FAILURES,
    EXIT_OK,
    EXIT_USAGE,
    add_verbosity_args,
    configure_logging,
    fraction_below_one,
    positive_int,
    returns_exit_status,
)
from pneumonia_monai.cli.select import progress_wrapper
from pneumonia_monai.data.dicom_datalist import KEY_COLUMNS, dicom_to_datalist, write_report
from pneumonia_monai.data.kaggle_dicom import kaggle_to_dicom
from pneumonia_monai.dicom.convert import COMPRESSIONS
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.labels import LABEL_MODES

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``convert`` argument parser (sub-commands ``kaggle-to-dicom`` and ``dicom-to-datalist``)."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai convert",
        description="Convert between the Kaggle JPEG tree, DICOM studies and MONAI datalists.",
    )
    sub = parser.add_subparsers(dest="direction", required=True, metavar="DIRECTION")

    k2d = sub.add_parser(
        "kaggle-to-dicom",
        help="Kaggle JPEG tree -> DICOM studies (DX For Presentation), datalist.json, labels.csv, "
        "conversion.csv",
        description="Convert a Kaggle/Mendeley JPEG tree to DICOM: OUT/<patient>/<study>/<series>/<sop>.dcm "
        "(deterministic UIDs, byte-identical re-runs), OUT/datalist.json, OUT/labels.csv (the labels CSV "
        "of dicom-to-datalist) and OUT/conversion.csv.",
    )
    k2d.add_argument(
        "src", type=Path, metavar="SRC", help="the Kaggle tree (train/test/val, NORMAL/PNEUMONIA)"
    )
    k2d.add_argument("out", type=Path, metavar="OUT", help="output folder (created)")
    k2d.add_argument(
        "--compression",
        choices=sorted(COMPRESSIONS),
        default="none",
        help="transfer syntax: none (Explicit VR Little Endian), jpeg2000 (lossless) or rle (default: none)",
    )
    k2d.add_argument(
        "--limit", type=positive_int, default=None, metavar="N", help="convert the first N films only"
    )
    k2d.add_argument(
        "--label-mode", choices=LABEL_MODES, default="binary", help="datalist labels (default: binary)"
    )
    add_verbosity_args(k2d)

    d2l = sub.add_parser(
        "dicom-to-datalist",
        help="DICOM folder + labels CSV -> datalist JSON",
        description="Select the chest frontal CR/DX films under DICOM_DIR, join their labels and write a "
        "datalist (image = DICOM path, label, patient_id = salted hash of Patient ID, subtype). LABELS_CSV "
        "columns: the key (study_uid, sop_uid or accession_number, after --key), the label (normal, "
        "pneumonia, bacterial or viral) and optionally subtype (bacterial, viral, unknown).",
    )
    d2l.add_argument(
        "dicom_dir", type=Path, metavar="DICOM_DIR", help="folder of DICOM files (searched recursively)"
    )
    d2l.add_argument("labels_csv", type=Path, metavar="LABELS_CSV", help="labels CSV (columns above)")
    d2l.add_argument("out_json", type=Path, metavar="OUT_JSON", help="datalist to write")
    d2l.add_argument(
        "--key", choices=sorted(KEY_COLUMNS), default="study_uid", help="join key (default: study_uid)"
    )
    d2l.add_argument("--label-column", default="label", help="name of the label column (default: label)")
    d2l.add_argument(
        "--label-mode", choices=LABEL_MODES, default="binary", help="datalist labels (default: binary)"
    )
    d2l.add_argument(
        "--val-fraction",
        type=fraction_below_one,
        default=0.2,
        help="fraction of patients in validation: 0, or up to 0.5 (default: 0.2)",
    )
    d2l.add_argument("--seed", type=int, default=0, help="seed of the patient split (default: 0)")
    d2l.add_argument(
        "--salt-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="file whose first line is the secret salt of the patient hashes (default: random, per run)",
    )
    d2l.add_argument("--rules", type=Path, default=None, metavar="FILE", help="site selection rules YAML")
    d2l.add_argument(
        "--report", type=Path, default=None, metavar="CSV", help="write one row per DICOM file here"
    )
    add_verbosity_args(d2l)
    return parser


def _kaggle_to_dicom(args: argparse.Namespace) -> int:
    try:
        result = kaggle_to_dicom(
            args.src,
            args.out,
            compression=args.compression,
            limit=args.limit,
            label_mode=args.label_mode,
            progress=progress_wrapper("films", quiet=args.quiet),
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    logger.info("labels of the converted films: %s", result.labels_path)
    if result.failed:
        logger.error("%d film(s) could not be converted: see %s", result.failed, result.report_path)
        return EXIT_FAILURES
    return EXIT_OK


def _read_salt(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    salt = lines[0].strip() if lines else ""
    if not salt:
        raise ValueError(f"salt file {path} is empty")
    return salt


def _dicom_to_datalist(args: argparse.Namespace) -> int:
    try:
        salt = _read_salt(args.salt_file) if args.salt_file is not None else None
        rules = SelectionRules.from_file(args.rules) if args.rules is not None else None
        build = dicom_to_datalist(
            args.dicom_dir,
            args.labels_csv,
            args.out_json,
            key=args.key,
            label_column=args.label_column,
            label_mode=args.label_mode,
            val_fraction=args.val_fraction,
            seed=args.seed,
            salt=salt,
            rules=rules,
            progress=progress_wrapper("files", quiet=args.quiet),
        )
    except (FileNotFoundError, ValueError, TypeError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    if args.report is not None:
        write_report(args.report, build.rows)
        logger.info("wrote %d row(s) to %s", len(build.rows), args.report)
    failed = build.label_errors or build.counts.get("error", 0) or not build.written
    return EXIT_FAILURES if failed else EXIT_OK


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pneumonia-monai convert``; return the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args)
    if args.direction == "kaggle-to-dicom":
        return _kaggle_to_dicom(args)
    return _dicom_to_datalist(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
