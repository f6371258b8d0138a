"""The Kaggle JPEG tree as DICOM studies, with a datalist, a labels CSV and a per-file report.

:func:`kaggle_to_dicom` turns the Kermany et al. (2018) JPEG films into DICOM: one patient per Kaggle
patient id (under a pseudonym), one study and one series per patient, one *Digital X-Ray Image Storage - For
Presentation* instance per film (:func:`pneumonia_monai.dicom.convert.build_dx_dataset`), so the files go
through the same :mod:`~pneumonia_monai.dicom.selection` rules as a hospital's. The pixel values are exactly
``PIL.Image.open(src).convert("L")``; re-running the conversion writes byte-identical files (UIDs are
name-based, see :mod:`~pneumonia_monai.dicom.uids`, and no attribute holds the time of the run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pneumonia_monai import checks
from pneumonia_monai.atomic import write_bytes_atomic, write_csv_atomic, write_json_atomic
from pneumonia_monai.data.datalist import DATALIST_KEYS
from pneumonia_monai.data.kaggle import IMAGE_SUFFIXES, ImageRecord, scan_kaggle_tree
from pneumonia_monai.dicom.convert import (
    COMPRESSION_WORDS,
    build_dx_dataset,
    check_compression,
    encode_dataset,
)
from pneumonia_monai.dicom.uids import derived_uid, file_digest, pseudonym
from pneumonia_monai.labels import check_label_mode, label_value
from pneumonia_monai.names import JUNK_REASON, is_junk

logger = logging.getLogger(__name__)

#: The Kaggle tree's name space for pseudonyms and UIDs: equal patient ids of another data set differ.
KAGGLE_NAMESPACE = "kermany2018"

#: Columns of ``conversion.csv``.
CONVERSION_COLUMNS: tuple[str, ...] = ("source", "output", "status", "reason")
#: Columns of the ``labels.csv`` that ``kaggle-to-dicom`` writes and :func:`read_labels` reads
#: (``--key sop_uid`` or ``--key study_uid``); ``kaggle_split`` is the Kaggle folder (``train``, ``val``,
#: ``test``) the film came from, which :func:`read_labels` ignores.
LABELS_COLUMNS: tuple[str, ...] = ("study_uid", "sop_uid", "label", "subtype", "kaggle_split")

_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

Progress = Callable[[Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True)
class ConversionRow:
    """One line of ``conversion.csv``: a file under the source tree and what became of it.

    Attributes:
        source: path relative to the source root.
        output: DICOM path relative to the output root (empty if none).
        status: ``written``, ``unchanged`` (identical file already there), ``skipped`` or ``error``.
        reason: why, in words.
    """

    source: str
    output: str
    status: str
    reason: str

    def as_row(self) -> dict[str, str]:
        """Return the row as a dictionary of :data:`CONVERSION_COLUMNS`."""
        return {"source": self.source, "output": self.output, "status": self.status, "reason": self.reason}


@dataclass
class KaggleConversion:
    """The outcome of :func:`kaggle_to_dicom`.

    Attributes:
        rows: one per file under the source tree, sorted by path.
        datalist: the datalist written to ``OUT/datalist.json``.
        datalist_path: where ``datalist.json`` was written.
        report_path: where ``conversion.csv`` was written.
        labels_path: where ``labels.csv`` was written (one row per converted film: :data:`LABELS_COLUMNS`).
    """

    rows: list[ConversionRow]
    datalist: dict[str, list[dict[str, Any]]]
    datalist_path: Path
    report_path: Path
    labels_path: Path

    def counts(self) -> dict[str, int]:
        """Number of rows per status."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return dict(sorted(counts.items()))

    @property
    def failed(self) -> int:
        """Number of files that ended in ``error``."""
        return sum(row.status == "error" for row in self.rows)


def _unconverted_reason(rel: Path) -> str:
    if is_junk(rel):
        return JUNK_REASON
    if rel.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {rel.suffix or 'none'})"
    return "image outside NORMAL/PNEUMONIA folders, or a copy in a nested chest_xray folder"


def kaggle_to_dicom(
    src: str | Path,
    out: str | Path,
    *,
    compression: str = "none",
    limit: int | None = None,
    label_mode: str = "binary",
    namespace: str = KAGGLE_NAMESPACE,
    progress: Progress | None = None,
) -> KaggleConversion:
    """Convert a Kaggle/Mendeley JPEG tree to DICOM studies, plus a datalist, a labels CSV and a report.

    Layout: ``OUT/<patient pseudonym>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. UIDs:
    the study and series from the namespace and Kaggle patient id, the instance from the file's SHA-256 and
    its path relative to ``src``; Instance Number from the film's rank among the patient's films (over the
    whole tree, so ``limit`` does not change it). Files already there with identical bytes are left alone.

    The datalist puts a film under ``test`` if it came from the Kaggle ``test`` folder, else ``training``;
    its ``patient_id`` is the pseudonym. Every file under ``src`` gets a row in ``conversion.csv``. Every
    film converted (written, or already there) gets a row in ``labels.csv``: its Study and SOP Instance
    UIDs, its label (``normal``/``pneumonia``), subtype and Kaggle folder, the labels CSV that
    :func:`dicom_to_datalist` (``pneumonia-monai convert dicom-to-datalist``) reads.

    Args:
        src: the Kaggle tree (see :func:`pneumonia_monai.data.kaggle.scan_kaggle_tree`).
        out: the output folder (created); must not be inside ``src``.
        compression: ``"none"``, ``"jpeg2000"`` (lossless) or ``"rle"``.
        limit: convert only the first ``limit`` films (sorted by path); the others get ``skipped`` rows.
        label_mode: ``"binary"`` or ``"subtype"`` (pneumonia films of unknown subtype are then left out of
            the datalist, but still converted).
        namespace: distinguishes this data set's patient ids from another's in pseudonyms and UIDs.
        progress: wraps the film iterator to show progress.

    Raises:
        FileNotFoundError: if ``src`` does not exist.
        ValueError: on a bad argument, ``out`` inside ``src``, or no films in ``src``.
        RuntimeError: if the encoder for ``compression`` is not installed.
    """
    src, out = Path(src), Path(out)
    check_compression(compression)
    check_label_mode(label_mode)
    if limit is not None:
        checks.positive_int("limit", limit, what="a positive int or None")
    if not namespace:
        raise ValueError("namespace must be a non-empty string")
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"the output folder {out} must not be inside the source folder {src}")
    records = scan_kaggle_tree(src)
    by_image = {Path(r.image).resolve(): r for r in records}
    instance_numbers = _instance_numbers(records, src)
    chosen = records if limit is None else records[:limit]
    chosen_paths = {Path(r.image).resolve() for r in chosen}

    rows_by_source: dict[str, ConversionRow] = {}
    labels: list[dict[str, str]] = []
    datalist: dict[str, list[dict[str, Any]]] = {key: [] for key in DATALIST_KEYS}
    for path in sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: p.relative_to(src).parts):
        rel = path.relative_to(src)
        key = path.resolve()
        if key not in by_image:
            rows_by_source[rel.as_posix()] = ConversionRow(
                rel.as_posix(), "", "skipped", _unconverted_reason(rel)
            )
        elif key not in chosen_paths:
            rows_by_source[rel.as_posix()] = ConversionRow(
                rel.as_posix(), "", "skipped", f"beyond --limit {limit}"
            )

    items = progress(chosen) if progress is not None else chosen
    for record in items:
        row, entry = _convert_one(record, src, out, compression, label_mode, namespace, instance_numbers)
        rows_by_source[row.source] = row
        if row.status in ("written", "unchanged"):
            _, study_uid, _, sop_file = row.output.split("/")
            labels.append(
                {
                    "study_uid": study_uid,
                    "sop_uid": sop_file.removesuffix(".dcm"),
                    "label": record.label,
                    "subtype": record.subtype,
                    "kaggle_split": record.source_split,
                }
            )
        if entry is not None:
            split = "test" if record.source_split == "test" else "training"
            datalist[split].append(entry)

    rows = [rows_by_source[k] for k in sorted(rows_by_source, key=lambda s: Path(s).parts)]
    out.mkdir(parents=True, exist_ok=True)
    datalist_path, report_path = out / "datalist.json", out / "conversion.csv"
    labels_path = out / "labels.csv"
    write_json_atomic(datalist_path, datalist)
    write_csv_atomic(
        labels_path, LABELS_COLUMNS, sorted(labels, key=lambda r: (r["study_uid"], r["sop_uid"]))
    )
    write_csv_atomic(report_path, CONVERSION_COLUMNS, (row.as_row() for row in rows))
    result = KaggleConversion(rows, datalist, datalist_path, report_path, labels_path)
    logger.info(
        "%d file(s) under %s: %s; datalist: %d training, %d test",
        len(rows),
        src,
        ", ".join(f"{n} {status}" for status, n in result.counts().items()),
        len(datalist["training"]),
        len(datalist["test"]),
    )
    return result


def _instance_numbers(records: Sequence[ImageRecord], src: Path) -> dict[str, int]:
    by_patient: dict[str, list[str]] = {}
    for record in records:
        by_patient.setdefault(record.patient_id, []).append(Path(record.image).relative_to(src).as_posix())
    numbers: dict[str, int] = {}
    for paths in by_patient.values():
        for number, rel in enumerate(sorted(paths), start=1):
            numbers[rel] = number
    return numbers


def _convert_one(
    record: ImageRecord,
    src: Path,
    out: Path,
    compression: str,
    label_mode: str,
    namespace: str,
    instance_numbers: dict[str, int],
) -> tuple[ConversionRow, dict[str, Any] | None]:
    path = Path(record.image)
    rel = path.relative_to(src).as_posix()
    try:
        digest = file_digest(path)
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except _IMAGE_ERRORS as exc:
        logger.warning("cannot read %s: %s", rel, type(exc).__name__)
        return ConversionRow(rel, "", "error", f"cannot decode image ({type(exc).__name__}: {exc})"), None
    patient = pseudonym(record.patient_id, namespace=namespace, prefix="ANON", length=12)
    study_uid = derived_uid("kaggle-to-dicom", "study", namespace, record.patient_id)
    series_uid = derived_uid("kaggle-to-dicom", "series", study_uid, "1")
    sop_uid = derived_uid("kaggle-to-dicom", "instance", namespace, digest, rel)
    ds = build_dx_dataset(
        pixels,
        patient=patient,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        instance_number=instance_numbers[rel],
    )
    try:
        data = encode_dataset(ds, compression)
    except (RuntimeError, ValueError) as exc:
        logger.warning("cannot encode the DICOM of %s: %s", rel, type(exc).__name__)
        return ConversionRow(rel, "", "error", f"cannot encode ({type(exc).__name__}: {exc})"), None
    target_rel = f"{patient}/{study_uid}/{series_uid}/{sop_uid}.dcm"
    target = out / target_rel
    if target.is_file() and target.read_bytes() == data:
        row = ConversionRow(rel, target_rel, "unchanged", "identical file already present")
    else:
        try:
            write_bytes_atomic(target, data)
        except OSError as exc:
            logger.warning("cannot write the DICOM of %s: %s", rel, type(exc).__name__)
            return ConversionRow(
                rel, target_rel, "error", f"cannot write ({type(exc).__name__}: {exc})"
            ), None
        row = ConversionRow(
            rel, target_rel, "written", f"{record.label}/{record.subtype}, {COMPRESSION_WORDS[compression]}"
        )
    label = label_value(record.label, record.subtype, label_mode)
    if label is None:
        return ConversionRow(
            row.source, row.output, row.status, f"{row.reason}; not in the subtype datalist"
        ), None
    entry = {"image": target_rel, "label": label, "patient_id": patient, "subtype": record.subtype}
    return row, entry
