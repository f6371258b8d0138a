"""A datalist from a site's DICOM archive and a labels CSV, with salted patient hashes for Patient IDs.

:func:`dicom_to_datalist` selects the chest frontal films of a DICOM folder
(:func:`pneumonia_monai.triage.select_files`), joins a labels CSV by Study Instance UID, SOP
Instance UID or Accession Number (:func:`read_labels`, label words of :mod:`pneumonia_monai.labels`) and
splits the patients into ``training`` and ``validation`` by the one patient split of the package
(:func:`pneumonia_monai.data.splits.grouped_split`: patient-grouped, stratified on normal / bacterial /
viral, seeded, with a leak check). Every file under the folder gets one row in the report.
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumonia_monai.atomic import write_csv_atomic, write_json_atomic
from pneumonia_monai.data.datalist import DATALIST_KEYS
from pneumonia_monai.data.splits import grouped_split
from pneumonia_monai.dicom.header import HEADER_READ_ERRORS, read_header
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import SELECTED, Decision
from pneumonia_monai.dicom.uids import salted_patient_hash
from pneumonia_monai.labels import check_label_mode, label_value, parse_label, stratum
from pneumonia_monai.triage import select_files

logger = logging.getLogger(__name__)

#: Columns of the ``dicom-to-datalist`` report.
REPORT_COLUMNS: tuple[str, ...] = ("path", "outcome", "reason")

#: Label CSV key column for each ``--key``.
KEY_COLUMNS: dict[str, str] = {
    "study_uid": "study_uid",
    "sop_uid": "sop_uid",
    "accession": "accession_number",
}

Progress = Callable[[Iterable[Any]], Iterable[Any]]


def _relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (with ``..`` where needed), absolute if there is no relative path."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()


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
    by :func:`pneumonia_monai.data.splits.grouped_split` (grouped by patient, stratified on normal /
    bacterial / viral, seeded with ``seed``), on the Patient IDs, so the split does not depend on the salt.
    The datalist's ``patient_id`` is :func:`~pneumonia_monai.dicom.uids.salted_patient_hash`; ``image`` is
    the DICOM path relative to the datalist's folder.

    Args:
        dicom_dir: the DICOM folder.
        labels_csv: see :func:`read_labels`.
        out_json: the datalist to write.
        key: ``"study_uid"``, ``"sop_uid"`` or ``"accession"``.
        label_column: name of the label column.
        label_mode: ``"binary"`` or ``"subtype"``.
        val_fraction: fraction of patients in ``validation``: 0 (none), or in (0, 0.5].
        seed: seed of the patient split.
        salt: secret for the patient hashes; ``None`` draws a random one (hashes then differ between runs).
        rules: selection rules (default: the package's).
        progress: wraps the file iterator of the selection.

    Raises:
        FileNotFoundError: if ``dicom_dir`` or ``labels_csv`` does not exist.
        ValueError: on a bad argument, a labels CSV without the needed columns, or fewer labelled patients
            than the split needs (``round(1 / val_fraction)``).
    """
    check_label_mode(label_mode)
    if val_fraction != 0 and not 0.0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be 0 or in (0, 0.5], got {val_fraction!r}")
    if salt is not None and not salt:
        raise ValueError("salt must be a non-empty string or None")
    dicom_dir, out_json = Path(dicom_dir), Path(out_json)
    if not dicom_dir.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {dicom_dir}")
    table = read_labels(labels_csv, key=key, label_column=label_column)
    for message in table.errors:
        logger.error("%s", message)
    selection = select_files([dicom_dir], rules, progress=progress)
    rows, candidates, unlabelled = _join_labels(selection.decisions, table, key, label_mode)
    validation = _validation_patients(candidates, val_fraction, seed)
    datalist = _datalist(candidates, validation, out_json.parent, salt or secrets.token_hex(16))
    split_of = {
        c.decision.relative_path: ("validation" if c.patient in validation else "training")
        for c in candidates
    }
    for row in rows:
        if row["path"] in split_of:
            row["outcome"], row["reason"] = split_of[row["path"]], "labelled"
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
        len({c.patient for c in candidates}),
        ", ".join(f"{n} {k}" for k, n in build.counts.items()),
    )
    return build


@dataclass(frozen=True)
class _Candidate:
    """A selected instance with a usable label."""

    decision: Decision
    patient: str  # the Patient ID (or ``study:<uid>``): never written, only hashed
    label: str
    subtype: str
    value: int


def _join_labels(
    decisions: Sequence[Decision], table: LabelTable, key: str, label_mode: str
) -> tuple[list[dict[str, str]], list[_Candidate], set[str]]:
    """One report row per decision; the labelled candidates; the selected studies without a label."""
    rows: list[dict[str, str]] = []
    candidates: list[_Candidate] = []
    unlabelled: set[str] = set()
    for decision in decisions:
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
        patient = patient_id or f"study:{decision.study_uid}"
        candidates.append(_Candidate(decision, patient, found[0], found[1], label))
        rows.append(_report_row(decision, "", ""))  # training or validation, once split
    return rows, candidates, unlabelled


def _validation_patients(candidates: Sequence[_Candidate], val_fraction: float, seed: int) -> set[str]:
    """The patients of ``validation``, by :func:`~pneumonia_monai.data.splits.grouped_split`."""
    if val_fraction == 0 or not candidates:
        return set()
    _, val_idx = grouped_split(
        [stratum(c.label, c.subtype) for c in candidates],
        [c.patient for c in candidates],
        val_fraction=val_fraction,
        seed=seed,
    )
    return {candidates[int(i)].patient for i in val_idx}


def _datalist(
    candidates: Sequence[_Candidate], validation: set[str], base: Path, salt: str
) -> dict[str, list[dict[str, Any]]]:
    datalist: dict[str, list[dict[str, Any]]] = {key: [] for key in DATALIST_KEYS}
    for c in candidates:
        datalist["validation" if c.patient in validation else "training"].append(
            {
                "image": _relative(c.decision.path, base),
                "label": c.value,
                "patient_id": salted_patient_hash(c.patient, salt),
                "subtype": c.subtype,
            }
        )
    return datalist


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
