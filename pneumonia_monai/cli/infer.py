"""``pneumonia-monai infer``: run the bundle on files and folders of chest films (DICOM, JPEG/PNG, NIfTI ...).

Examples::

    pneumonia-monai infer /archive/incoming --output results/
    pneumonia-monai infer study1/ film.png --output out/ --heatmaps --device cuda --batch-size 32
    pneumonia-monai infer /archive --output out/ --rules site_rules.yaml --no-sr -q

Writes ``OUT/results.csv`` and ``OUT/results.json`` (one row per file found: ``ok``, ``skipped`` or
``error`` with the reason), ``OUT/studies.csv`` (one row per study), ``OUT/sr/<StudyInstanceUID>.dcm``
(a DICOM SR per study, unless ``--no-sr``), with ``--heatmaps`` Grad-CAM overlays in ``OUT/heatmaps/`` and
with ``--fhir`` a FHIR R5 Bundle per study in ``OUT/fhir/`` (:mod:`pneumonia_monai.fhir`). ``--site FILE``
calls films at a site's own operating point (:mod:`pneumonia_monai.site_overlay`) instead of the bundle's.
``--masks`` writes each film's lung fields and Grad-CAM as NIfTI on its own grid and affine, and a DICOM
film's lung fields as a DICOM Segmentation, in ``OUT/masks/`` (:mod:`pneumonia_monai.inference.masks`).
``--manifest FILE`` adds a CSV or Parquet of URIs (local paths, ``s3://``/``gs://``, DICOMweb instance URLs;
:mod:`pneumonia_monai.inference.sources`); ``--engine ray`` scores the films in a Ray Data actor pool, on
this machine or the cluster of ``--ray-address`` (:mod:`pneumonia_monai.inference.ray_engine`), with the
same rows, and writes ``OUT/results.parquet`` too. An interrupted run started again finishes the rest
(``--force`` redoes everything). Another run writing to the same ``OUT`` makes this one stop at once
(exit status 2).

Exit status: 0 when every file is ``ok`` or ``skipped``; 1 when a file ended in ``error`` (or an output could
not be written); 2 for bad usage, an unusable bundle or a busy output folder.
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
    add_limit_args,
    add_verbosity_args,
    apply_limit_args,
    configure_logging,
    non_negative_int,
    positive_int,
    returns_exit_status,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``infer`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="pneumonia-monai infer",
        description="Classify every chest film under the inputs (DICOM selected by the selection rules, "
        "JPEG/PNG/TIFF taken as frontal films, NIfTI/MetaImage/NRRD films of one slice reoriented by their "
        "affine) with the bundle's preprocessing, weights and threshold.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="files and folders")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="OUT", help="output folder")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle folder (default: the bundle shipped with the package)",
    )
    parser.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="model variant: configs/inference_NAME.json over inference.json (subtype: three classes)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the network runs (default: auto)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        choices=("auto", "bf16", "fp32"),
        help="CPU forward precision (default: the bundle's; bf16 only where it keeps parity with fp32)",
    )
    parser.add_argument(
        "--full-decode",
        action="store_true",
        help="decode every pixel of each film (default: only as finely as the network input needs)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N", help="images per forward pass"
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="decoding threads (0: none; default 2)",
    )
    parser.add_argument(
        "--heatmaps", action="store_true", help="write Grad-CAM overlays (PNG, and DICOM Secondary Capture)"
    )
    parser.add_argument(
        "--masks",
        action="store_true",
        help="write the lung fields and the Grad-CAM as NIfTI on each film's own grid (OUT/masks/, for 3D "
        "Slicer or ITK-SNAP), and the lung fields of each DICOM film as a DICOM Segmentation",
    )
    parser.add_argument("--no-sr", dest="write_sr", action="store_false", help="write no DICOM SR")
    parser.add_argument("--force", action="store_true", help="recompute files finished by an earlier run")
    parser.add_argument(
        "--rules", type=Path, default=None, metavar="FILE", help="site selection rules YAML (see 'select')"
    )
    parser.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="FILE",
        help="site operating point (written by 'evaluate --choose-threshold'): call films at its threshold "
        "and record it in every row and SR; refused when chosen for another model version",
    )
    parser.add_argument(
        "--fhir",
        action="store_true",
        help="also write a FHIR R5 Bundle per study (OUT/fhir/<StudyInstanceUID>.json: DiagnosticReport, "
        "Observations, Device, after HL7's DICOM SR to FHIR mapping)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        metavar="FILE",
        help="CSV or Parquet of URIs to classify too (column 'uri' or 'path'): local paths, s3:// or gs:// "
        "(fsspec), DICOMweb instance URLs",
    )
    parser.add_argument(
        "--parquet", action="store_true", help="also write OUT/results.parquet (always with --engine ray)"
    )
    scale = parser.add_argument_group("engine", "where the films are scored (the same rows either way)")
    scale.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: threads of this process (default); ray: a Ray Data actor pool (pip install .[ray])",
    )
    scale.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (auto, or ray://HOST:10001; default: start a local Ray)",
    )
    scale.add_argument(
        "--ray-actors",
        type=positive_int,
        default=None,
        metavar="N",
        help="actors scoring films, each loading the model once (default: the cluster's CPUs)",
    )
    scale.add_argument(
        "--ray-cpus-per-actor",
        type=positive_int,
        default=1,
        metavar="N",
        help="CPUs each actor reserves for its forward (default 1)",
    )
    pull = parser.add_argument_group(
        "pull mode (DICOMweb)",
        "retrieve studies with WADO-RS into OUT/dicomweb/<StudyInstanceUID>/ and classify them too",
    )
    pull.add_argument("--dicomweb", metavar="URL", help="base URL of a DICOMweb service (QIDO/WADO/STOW-RS)")
    pull.add_argument(
        "--study", action="append", default=[], metavar="UID", help="Study Instance UID (repeat)"
    )
    pull.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="QIDO-RS filter by DICOM keyword, e.g. ModalitiesInStudy=CR or StudyDate=20240101-20240131",
    )
    pull.add_argument(
        "--limit", type=positive_int, default=None, metavar="N", help="at most N studies from --query"
    )
    pull.add_argument(
        "--stow", action="store_true", help="send the SRs (and heatmaps, SEGs) back with STOW-RS"
    )
    add_limit_args(parser)
    add_verbosity_args(parser)
    return parser


def _parse_query(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--query must be KEY=VALUE, got {item!r}")
        filters[key] = value
    return filters


def _pull(args: argparse.Namespace) -> tuple[list[Path], int]:
    """Retrieve the asked studies; return their folders and the number that failed."""
    from pneumonia_monai.dicomweb.pull import DicomWebError, query_studies, retrieve_study

    study_uids = list(args.study)
    if args.query:
        found = query_studies(args.dicomweb, _parse_query(args.query), limit=args.limit)
        study_uids += [str(ds.StudyInstanceUID) for ds in found if "StudyInstanceUID" in ds]
        logger.info("QIDO-RS query matched %d stud(ies)", len(found))
    folders, failed = [], 0
    for study_uid in dict.fromkeys(study_uids):
        dest = args.output / "dicomweb" / study_uid
        try:
            files = retrieve_study(args.dicomweb, study_uid, dest)
        except DicomWebError as exc:
            logger.error("cannot retrieve study %s: %s", study_uid, exc)
            failed += 1
            continue
        logger.info("retrieved %d instance(s) of study %s", len(files), study_uid)
        folders.append(dest)
    return folders, failed


@returns_exit_status
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pneumonia-monai infer``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    apply_limit_args(args)

    from pneumonia_monai.dicom.rules import SelectionRules
    from pneumonia_monai.inference.bundle import BundleError
    from pneumonia_monai.inference.ray_engine import RayEngineError
    from pneumonia_monai.inference.runner import OutputBusyError, run_inference
    from pneumonia_monai.site_overlay import SiteOverlayError, read_site_overlay

    if not args.inputs and not args.dicomweb and args.manifest is None:
        parser.print_usage(sys.stderr)
        logger.error(
            "give INPUT files or folders, --manifest FILE, or --dicomweb URL with --study or --query"
        )
        return EXIT_USAGE
    if args.dicomweb and not (args.study or args.query):
        logger.error("--dicomweb needs --study UID or --query KEY=VALUE")
        return EXIT_USAGE
    if (args.study or args.query or args.stow) and not args.dicomweb:
        logger.error("--study, --query and --stow need --dicomweb URL")
        return EXIT_USAGE
    try:
        rules = SelectionRules.from_file(args.rules) if args.rules is not None else None
    except (OSError, ValueError, TypeError) as exc:
        logger.error("unusable rules file: %s", exc)
        return EXIT_USAGE
    try:
        site = read_site_overlay(args.site) if args.site is not None else None
    except SiteOverlayError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    inputs, pull_failures = list(args.inputs), 0
    if args.dicomweb:
        from pneumonia_monai.dicomweb.pull import DicomWebError

        try:
            pulled, pull_failures = _pull(args)
        except (ValueError, DicomWebError) as exc:
            logger.error("DICOMweb: %s", exc)
            return EXIT_USAGE
        inputs += pulled
        if not inputs and args.manifest is None:
            logger.error("no study could be retrieved from %s", args.dicomweb)
            return EXIT_FAILURES
    try:
        summary = run_inference(
            inputs,
            args.output,
            bundle=args.bundle,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            heatmaps=args.heatmaps,
            masks=args.masks,
            write_sr=args.write_sr,
            force=args.force,
            rules=rules,
            progress=None if not args.quiet else False,
            variant=args.variant,
            site=site,
            fhir=args.fhir,
            manifest=args.manifest,
            parquet=args.parquet,
            engine=args.engine,
            ray_address=args.ray_address,
            ray_actors=args.ray_actors,
            ray_cpus_per_actor=args.ray_cpus_per_actor,
            full_decode=args.full_decode,
            precision=args.precision,
        )
    except BundleError as exc:
        logger.error("unusable bundle: %s", exc)
        return EXIT_USAGE
    except OutputBusyError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError, TypeError) as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except RayEngineError as exc:
        logger.error("%s", exc)
        return EXIT_FAILURES
    except OSError as exc:
        logger.error("cannot write the outputs: %s", exc)
        return EXIT_FAILURES
    stow_failed = False
    if args.stow:
        from pneumonia_monai.dicomweb.pull import DicomWebError, store_instances

        results = [*summary.sr_paths, *summary.sc_paths, *summary.seg_paths]
        try:
            if results:
                store_instances(args.dicomweb, results)
            logger.info("sent %d result object(s) to %s with STOW-RS", len(results), args.dicomweb)
        except DicomWebError as exc:
            logger.error("STOW-RS failed: %s", exc)
            stow_failed = True
    ok = summary.exit_code == 0 and not pull_failures and not stow_failed
    return EXIT_OK if ok else EXIT_FAILURES


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
