"""Conversions between the Kaggle JPEG tree, DICOM studies and MONAI datalists.

:func:`kaggle_to_dicom` turns the Kermany et al. (2018) JPEG films into DICOM: one patient per Kaggle
patient id (under a pseudonym), one study and one series per patient, one *Digital X-Ray Image Storage - For
Presentation* instance per film, so the files go through the same :mod:`~pneumonia_monai.dicom.selection`
rules as a hospital's. The pixel values are exactly ``PIL.Image.open(src).convert("L")``; re-running the
conversion writes byte-identical files (UIDs are name-based, see :mod:`~pneumonia_monai.dicom.uids`, and no
attribute holds the time of the run).

What the source does not tell is left empty where the IOD allows it (Study Date and Time, Patient's Birth
Date and Sex, Manufacturer: all Type 2) rather than invented. Two Type 1 attributes have no known value and
get a documented nominal one: Imager Pixel Spacing (the films were resampled to an unknown scale, see
:data:`NOMINAL_IMAGER_PIXEL_SPACING_MM`) and Pixel Intensity Relationship (``LOG``, sign -1: processed
films, brighter = less X-ray intensity). The films are antero-posterior (Kermany et al. 2018: "Chest X-ray
images (anterior-posterior) were selected from retrospective cohorts of pediatric patients"), so View Position
is ``AP``; the source went through lossy JPEG, so Lossy Image Compression is ``01`` (ISO_10918_1).

:func:`dicom_to_datalist` goes the other way for a site's own archive: select the chest frontal films,
join a labels CSV, and write a datalist the bundle trains on, with salted patient hashes instead of Patient
IDs.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from pneumonia_monai.atomic import write_bytes_atomic, write_csv_atomic, write_json_atomic
from pneumonia_monai.data.kaggle import IMAGE_SUFFIXES, JUNK_NAMES, ImageRecord, scan_kaggle_tree
from pneumonia_monai.dicom.header import HEADER_READ_ERRORS, read_header
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import SELECTED, Decision, select_files
from pneumonia_monai.dicom.uids import derived_uid, file_digest, pseudonym, salted_patient_hash
from pneumonia_monai.labels import check_label_mode, label_value, parse_label

logger = logging.getLogger(__name__)

#: ``--compression`` choices -> transfer syntax (``None``: Explicit VR Little Endian, uncompressed).
COMPRESSIONS: dict[str, UID | None] = {"none": None, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}
#: Encoder plugin used for each compressed transfer syntax (pydicom's own RLE encoder; OpenJPEG for J2K).
_ENCODER_PLUGINS: dict[str, str] = {"jpeg2000": "pylibjpeg", "rle": "pydicom"}
_WORDS: dict[str, str] = {"none": "uncompressed", "jpeg2000": "JPEG 2000 lossless", "rle": "RLE lossless"}

#: The Kaggle tree's name space for pseudonyms and UIDs: equal patient ids of another data set differ.
KAGGLE_NAMESPACE = "kermany2018"

#: Imager Pixel Spacing (0018,1164) written for the converted films, in mm. The attribute is Type 1 in the
#: DX Detector module but the true value is unknown: the Kaggle films were resampled from various sizes.
#: 1.0 is a deliberately round, *nominal* value (Derivation Description says so); do not measure with it.
NOMINAL_IMAGER_PIXEL_SPACING_MM = 1.0

#: Columns of ``conversion.csv``.
CONVERSION_COLUMNS: tuple[str, ...] = ("source", "output", "status", "reason")
#: Columns of the ``labels.csv`` that ``kaggle-to-dicom`` writes and :func:`read_labels` reads
#: (``--key sop_uid`` or ``--key study_uid``); ``kaggle_split`` is the Kaggle folder (``train``, ``val``,
#: ``test``) the film came from, which :func:`read_labels` ignores.
LABELS_COLUMNS: tuple[str, ...] = ("study_uid", "sop_uid", "label", "subtype", "kaggle_split")
#: Columns of the ``dicom-to-datalist`` report.
REPORT_COLUMNS: tuple[str, ...] = ("path", "outcome", "reason")

#: Label CSV key column for each ``--key``.
KEY_COLUMNS: dict[str, str] = {
    "study_uid": "study_uid",
    "sop_uid": "sop_uid",
    "accession": "accession_number",
}
_CHEST = ("SCT", "816094009", "Chest")
_ANTERO_POSTERIOR = ("SCT", "399348003", "antero-posterior")
_IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

Progress = Callable[[Iterable[Any]], Iterable[Any]]


# ----------------------------------------------------------------------------------- writing


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (with ``..`` where needed), absolute if there is no relative path."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _empty_datalist() -> dict[str, list[dict[str, Any]]]:
    return {"training": [], "validation": [], "test": []}


# ---------------------------------------------------------------------------- the DX dataset


def _code(scheme: str, value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_dx_dataset(
    pixels: np.ndarray,
    *,
    patient: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    instance_number: int,
    imager_pixel_spacing_mm: float = NOMINAL_IMAGER_PIXEL_SPACING_MM,
) -> Dataset:
    """Build a DX For Presentation instance (uncompressed) of one 8-bit grayscale film.

    Args:
        pixels: ``(rows, columns)`` ``uint8`` array, stored as is (MONOCHROME2, Bits Stored 8).
        patient: the pseudonym written as Patient ID, Patient's Name (family name) and Study ID.
        study_uid: Study Instance UID.
        series_uid: Series Instance UID.
        sop_uid: SOP Instance UID.
        instance_number: Instance Number (1 or more).
        imager_pixel_spacing_mm: Imager Pixel Spacing, both directions.

    Raises:
        TypeError: if ``pixels`` is not a ``uint8`` array.
        ValueError: if ``pixels`` is not 2-D, ``patient`` is not a 1-16 character ``[A-Z0-9]`` pseudonym, or a
            number is out of range.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be a uint8 numpy array, got {getattr(pixels, 'dtype', type(pixels))}")
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"pixels must be a non-empty 2-D array, got shape {pixels.shape}")
    if not (patient.isascii() and patient.isalnum() and 1 <= len(patient) <= 16):
        raise ValueError(f"patient must be a 1-16 character alphanumeric pseudonym, got {patient!r}")
    if instance_number < 1:
        raise ValueError(f"instance_number must be 1 or more, got {instance_number!r}")
    if not imager_pixel_spacing_mm > 0:
        raise ValueError(f"imager_pixel_spacing_mm must be positive, got {imager_pixel_spacing_mm!r}")
    ds = Dataset()
    # SOP Common
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = sop_uid
    # Patient: a pseudonym; what the source does not say stays empty (Type 2).
    ds.PatientName = f"{patient}^"
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Kaggle patient id replaced by a one-way pseudonym"
    # General Study: dates unknown, left empty rather than invented.
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = patient
    ds.AccessionNumber = ""
    ds.StudyDescription = "Chest X-ray (Kermany 2018, converted)"
    # General Series, DX Series
    ds.Modality = "DX"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Chest AP (converted from JPEG)"
    ds.BodyPartExamined = "CHEST"
    ds.PresentationIntentType = "FOR PRESENTATION"
    # General Equipment: unknown
    ds.Manufacturer = ""
    # General Image, DX Image
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = (
        "Converted from an 8-bit JPEG (Kermany et al. 2018) by pneumonia_monai; "
        "Imager Pixel Spacing is nominal (true spacing unknown)"
    )
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    # VOI LUT: centre 128, width 256 maps stored value x to x / 255 exactly (PS3.3 C.11.2.1.2.1).
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    # DX Anatomy Imaged
    ds.ImageLaterality = "U"
    ds.AnatomicRegionSequence = DicomSequence([_code(*_CHEST)])
    # DX Detector
    ds.DetectorType = ""
    ds.ImagerPixelSpacing = [imager_pixel_spacing_mm, imager_pixel_spacing_mm]
    # DX Positioning
    ds.PositionerType = ""
    ds.ViewPosition = "AP"
    ds.ViewCodeSequence = DicomSequence([_code(*_ANTERO_POSTERIOR)])
    # Acquisition Context
    ds.AcquisitionContextSequence = DicomSequence([])
    # Image Pixel
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def check_compression(compression: str) -> UID | None:
    """Return the transfer syntax of a ``--compression`` choice, checking its encoder is installed.

    Raises:
        ValueError: on an unknown choice.
        RuntimeError: if the encoder is not available (the message names the missing packages).
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    tsyntax = COMPRESSIONS[compression]
    if tsyntax is not None:
        encoder = get_encoder(tsyntax)
        plugin = _ENCODER_PLUGINS[compression]
        if plugin not in encoder.available_plugins:
            missing = encoder.missing_dependencies or [f"the {plugin!r} encoder plugin"]
            raise RuntimeError(f"cannot encode {tsyntax.name}: missing {'; '.join(missing)}")
    return tsyntax


def encode_dataset(ds: Dataset, compression: str = "none") -> bytes:
    """Return the DICOM file bytes of ``ds`` (preamble, file meta, data set), compressed as asked.

    ``"jpeg2000"`` is JPEG 2000 Lossless (OpenJPEG through pylibjpeg), ``"rle"`` is RLE Lossless (pydicom's
    encoder); both are lossless, so the decoded pixels equal the input.

    Raises:
        ValueError, RuntimeError: see :func:`check_compression`.
    """
    tsyntax = check_compression(compression)
    if tsyntax is not None:
        ds.compress(tsyntax, encoding_plugin=_ENCODER_PLUGINS[compression], generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- kaggle -> DICOM


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
    if any(part in JUNK_NAMES or part.startswith("._") for part in rel.parts):
        return "system junk file (Mac/Windows metadata)"
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
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
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
    datalist = _empty_datalist()
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
            rel, target_rel, "written", f"{record.label}/{record.subtype}, {_WORDS[compression]}"
        )
    label = label_value(record.label, record.subtype, label_mode)
    if label is None:
        return ConversionRow(
            row.source, row.output, row.status, f"{row.reason}; not in the subtype datalist"
        ), None
    entry = {"image": target_rel, "label": label, "patient_id": patient, "subtype": record.subtype}
    return row, entry


# ------------------------------------------------------------------------- DICOM -> datalist


@dataclass(frozen=True)
class LabelTable:
    """Labels read from a CSV, keyed by the chosen key column.

    Attributes:
        labels: key -> (label, subtype).
        errors: one message per bad row (unknown label, missing key, conflicting duplicate); never the key
            itself (an accession number is PHI-adjacent), only the line number and the bad value.
        bad_keys: keys whose rows had an error: their studies are left out.
    """

    labels: dict[str, tuple[str, str]]
    errors: list[str]
    bad_keys: frozenset[str]


def read_labels(path: str | Path, *, key: str = "study_uid", label_column: str = "label") -> LabelTable:
    """Read a labels CSV.

    Columns: the key column (``study_uid``, ``sop_uid`` or ``accession_number``, after ``key``), the label
    column (default ``label``): ``normal``, ``pneumonia``, ``bacterial``/``bacteria`` or ``viral``/``virus``
    (case-insensitive), and optionally ``subtype`` (``bacterial``, ``viral``, ``unknown`` or empty), read
    when the label is ``pneumonia``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on an unknown ``key``, or if a required column is missing.
    """
    if key not in KEY_COLUMNS:
        raise ValueError(f"key must be one of {sorted(KEY_COLUMNS)}, got {key!r}")
    key_column = KEY_COLUMNS[key]
    labels: dict[str, tuple[str, str]] = {}
    first_line: dict[str, int] = {}
    errors: list[str] = []
    bad: set[str] = set()
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in (key_column, label_column):
            if column not in columns:
                raise ValueError(f"{path}: no {column!r} column (columns: {columns})")
        for line, row in enumerate(reader, start=2):
            value = (row.get(key_column) or "").strip()
            raw_label = (row.get(label_column) or "").strip()
            if not value:
                errors.append(f"{path}:{line}: empty {key_column}")
                continue
            parsed = parse_label(raw_label, (row.get("subtype") or "").strip())
            if isinstance(parsed, str):
                errors.append(f"{path}:{line}: {parsed}")
                bad.add(value)
                continue
            if value in labels and labels[value] != parsed:
                errors.append(f"{path}:{line}: label {raw_label!r} conflicts with line {first_line[value]}")
                bad.add(value)
                continue
            labels.setdefault(value, parsed)
            first_line.setdefault(value, line)
    for value in bad:
        labels.pop(value, None)
    return LabelTable(labels, errors, frozenset(bad))


@dataclass
class DatalistBuild:
    """The outcome of :func:`dicom_to_datalist`.

    Attributes:
        datalist: what was written (``training``, ``validation``, ``test``).
        rows: one per file under the DICOM folder (:data:`REPORT_COLUMNS`): ``training``, ``validation``,
            ``unlabelled``, ``bad label``, ``no subtype``, ``skipped`` or ``error``.
        label_errors: the labels CSV's bad rows.
        unlabelled_studies: number of selected studies without a label.
        written: whether the datalist file was written (not when nothing could be labelled).
    """

    datalist: dict[str, list[dict[str, Any]]]
    rows: list[dict[str, str]]
    label_errors: list[str]
    unlabelled_studies: int
    written: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def dicom_to_datalist(
    dicom_dir: str | Path,
    labels_csv: str | Path,
    out_json: str | Path,
    *,
    key: str = "study_uid",
    label_column: str = "label",
    label_mode: str = "binary",
    val_fraction: float = 0.2,
    seed: int = 0,
    salt: str | None = None,
    rules: SelectionRules | None = None,
    progress: Progress | None = None,
) -> DatalistBuild:
    """Select the chest frontal films under ``dicom_dir``, join the labels and write a datalist.

    Each selected instance takes the label of its key (StudyInstanceUID, SOPInstanceUID or AccessionNumber).
    Patients (by Patient ID; a study without one is its own patient) are split ``training``/``validation``
    with ``random.Random(seed)`` over the sorted Patient IDs, so the split does not depend on the salt. The
    datalist's ``patient_id`` is :func:`~pneumonia_monai.dicom.uids.salted_patient_hash`; ``image`` is the
    DICOM path relative to the datalist's folder.

    Args:
        dicom_dir: the DICOM folder.
        labels_csv: see :func:`read_labels`.
        out_json: the datalist to write.
        key: ``"study_uid"``, ``"sop_uid"`` or ``"accession"``.
        label_column: name of the label column.
        label_mode: ``"binary"`` or ``"subtype"``.
        val_fraction: fraction of patients in ``validation`` (0 to below 1).
        seed: seed of the patient split.
        salt: secret for the patient hashes; ``None`` draws a random one (hashes then differ between runs).
        rules: selection rules (default: the package's).
        progress: wraps the file iterator of the selection.

    Raises:
        FileNotFoundError: if ``dicom_dir`` or ``labels_csv`` does not exist.
        ValueError: on a bad argument or a labels CSV without the needed columns.
    """
    check_label_mode(label_mode)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if salt is not None and not salt:
        raise ValueError("salt must be a non-empty string or None")
    dicom_dir, out_json = Path(dicom_dir), Path(out_json)
    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {dicom_dir}")
    table = read_labels(labels_csv, key=key, label_column=label_column)
    for message in table.errors:
        logger.error("%s", message)
    selection = select_files([dicom_dir], rules, progress=progress)
    salt = salt or secrets.token_hex(16)

    rows: list[dict[str, str]] = []
    candidates: list[tuple[Decision, str, tuple[str, str], int]] = []
    unlabelled: set[str] = set()
    for decision in selection.decisions:
        if decision.status != SELECTED:
            rows.append(_report_row(decision, decision.status, decision.reason))
            continue
        extra = _identifying_values(decision.path)
        if extra is None:
            rows.append(_report_row(decision, "error", "header could not be read a second time"))
            continue
        patient_id, accession = extra
        value = {"study_uid": decision.study_uid, "sop_uid": decision.sop_uid, "accession": accession}[key]
        if value in table.bad_keys:
            rows.append(_report_row(decision, "bad label", "its row in the labels CSV is invalid"))
            continue
        found = table.labels.get(value) if value else None
        if found is None:
            unlabelled.add(decision.study_uid)
            rows.append(_report_row(decision, "unlabelled", f"no label for its {KEY_COLUMNS[key]}"))
            continue
        label = label_value(found[0], found[1], label_mode)
        if label is None:
            rows.append(_report_row(decision, "no subtype", "pneumonia of unknown subtype (subtype mode)"))
            continue
        candidates.append((decision, patient_id or f"study:{decision.study_uid}", found, label))
        rows.append(_report_row(decision, "", ""))

    patients = sorted({c[1] for c in candidates})
    random.Random(seed).shuffle(patients)
    n_val = round(len(patients) * val_fraction)
    validation = set(patients[:n_val])
    datalist = _empty_datalist()
    outcome_by_path: dict[str, str] = {}
    for decision, patient, (_, subtype), label in candidates:
        split = "validation" if patient in validation else "training"
        datalist[split].append(
            {
                "image": _relative(decision.path, out_json.parent),
                "label": label,
                "patient_id": salted_patient_hash(patient, salt),
                "subtype": subtype,
            }
        )
        outcome_by_path[decision.relative_path] = split
    for row in rows:
        if row["outcome"] == "":
            row["outcome"] = outcome_by_path[row["path"]]
            row["reason"] = "labelled"
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    build = DatalistBuild(datalist, rows, table.errors, len(unlabelled), counts=dict(sorted(counts.items())))
    if unlabelled:
        logger.warning("%d selected study(ies) have no label and were left out", len(unlabelled))
    if not candidates:
        logger.error("no selected DICOM file has a usable label: %s not written", out_json)
        return build
    write_json_atomic(out_json, datalist)
    build.written = True
    logger.info(
        "wrote %s: %d training, %d validation image(s) of %d patient(s); %s",
        out_json,
        len(datalist["training"]),
        len(datalist["validation"]),
        len(patients),
        ", ".join(f"{n} {k}" for k, n in build.counts.items()),
    )
    return build


def _report_row(decision: Decision, outcome: str, reason: str) -> dict[str, str]:
    return {"path": decision.relative_path, "outcome": outcome, "reason": reason}


def _identifying_values(path: Path) -> tuple[str, str] | None:
    """Return ``(PatientID, AccessionNumber)`` of a selected file, never logged."""
    try:
        ds = read_header(path, ["SpecificCharacterSet", "PatientID", "AccessionNumber"]).dataset
    except HEADER_READ_ERRORS as exc:
        logger.warning("cannot re-read the header of %s: %s", path, type(exc).__name__)
        return None
    return str(ds.get("PatientID", "") or "").strip(), str(ds.get("AccessionNumber", "") or "").strip()


def write_report(path: str | Path, rows: Iterable[dict[str, str]]) -> None:
    """Write the per-file rows of :class:`DatalistBuild` as a CSV, atomically."""
    write_csv_atomic(Path(path), REPORT_COLUMNS, rows)
