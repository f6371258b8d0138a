"""Triage a DICOM folder: which files are chest frontal CR/DX films for presentation, and why.

Files are recognised as DICOM by their header, never by their name, and only headers are read: the pixel
data is neither read nor decoded (a deflated data set is inflated only as far as its header, within the
limits of :mod:`pneumonia_monai.dicom.limits`). Every entry found under the inputs gets exactly one
:class:`Decision` (``selected``, ``skipped`` or ``error``) with a reason that names the attribute that
decided it, e.g. ``lateral view (ViewPosition=LL)`` or ``not chest (BodyPartExamined=ABDOMEN)``.

The rules are data (:class:`pneumonia_monai.dicom.rules.SelectionRules`, loaded from ``selection_rules.yaml``
shipped with the package, or a site's own file); headers are read by :mod:`pneumonia_monai.dicom.header` and
the inputs walked by :mod:`pneumonia_monai.dicom.walk`. The rules are applied in this order, the first that
matches decides:

0. operating-system metadata (``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db``:
   :func:`pneumonia_monai.names.is_junk`) is ``skipped``; of the entries that are not regular files
   (:func:`entry_problem`), links (never followed) and named pipes (never opened) are ``skipped``;
   dangling links, link loops, unreadable folders and paths longer than ``PATH_MAX`` are ``error``;
1. zero-byte file or not a DICOM file (``skipped``); truncated file (also cut inside its header),
   unreadable header, sequences nested too deeply, a deflated data set that is corrupt, cut short or
   over the inflated-size limit (``error``);
2. DICOMDIR;
3. our own output (``own_output_markers``);
4. structured reports, key object selections, presentation states;
5. Presentation Intent Type other than FOR PRESENTATION (DX For Processing);
6. SOP classes other than the kept image classes (DX For Processing named as such), missing UIDs;
7. no Pixel Data;
8. body part (Body Part Examined, else Anatomic Region Sequence, else description keywords);
9. view (View Position, else View Code Sequence, else series-level keywords);
10. intended use (:mod:`pneumonia_monai.dicom.intended_use`): with ``outside_intended_use: skip``, a film
    whose patient is outside the intended ages; otherwise such a film is selected and flagged
    (:attr:`Decision.intended_use` ``no``);
11. a second file with the SOP Instance UID of a file already selected.

Secondary Capture images (step 6) are kept when ``accept_secondary_capture`` is on and their Modality is
one of ``secondary_capture_modalities`` (CR, DX) or their Conversion Type one of
``secondary_capture_conversion_types`` (DF, digitized film); steps 7 to 10 then apply as to CR and DX.

Decisions carry UIDs, modality, body part, view and the intended-use verdict, never names, ids, ages,
dates or accession numbers.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForProcessing,
    KeyObjectSelectionDocumentStorage,
    MediaStorageDirectoryStorage,
)

from pneumonia_monai.dicom import intended_use as intended
from pneumonia_monai.dicom.header import (
    Header,
)
from pneumonia_monai.dicom.rules import SECONDARY_CAPTURE_SOP_CLASSES, SelectionRules
from pneumonia_monai.dicom.walk import file_kind, os_error_reason
from pneumonia_monai.names import escape_name, printable

logger = logging.getLogger(__name__)

#: Decision statuses.
SELECTED = "selected"
SKIPPED = "skipped"
ERROR = "error"
STATUSES: tuple[str, ...] = (SELECTED, SKIPPED, ERROR)

#: Columns of :meth:`Decision.as_row`, in order.
DECISION_COLUMNS: tuple[str, ...] = (
    "path",
    "status",
    "reason",
    "study_uid",
    "series_uid",
    "sop_uid",
    "sop_class",
    "modality",
    "body_part",
    "view",
    "intended_use",
)

OUTSIDE_INTENDED_USE = "outside the intended use"


# --------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What :func:`pneumonia_monai.triage.select_files` decided for one file.

    Attributes:
        path: the file.
        root: the input it was found under (a folder, or the file's own folder for a file input).
        status: ``"selected"``, ``"skipped"`` or ``"error"`` (the header could not be read).
        reason: why, naming the deciding attribute and its value.
        study_uid: Study Instance UID (empty where the header could not be read, as for the next fields).
        series_uid: Series Instance UID.
        sop_uid: SOP Instance UID.
        sop_class: SOP Class UID (or the Media Storage SOP Class UID of the file meta).
        modality: Modality, upper case.
        body_part: Body Part Examined as read, upper case (may be empty).
        view: View Position as read, upper case (may be empty).
        intended_use: ``yes``, ``no`` or ``unknown`` for a film selected (or skipped for its patient's
            age), from :func:`pneumonia_monai.dicom.intended_use.assess_intended_use`; empty otherwise.
    """

    path: Path
    root: Path
    status: str
    reason: str
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    sop_class: str = ""
    modality: str = ""
    body_part: str = ""
    view: str = ""
    intended_use: str = ""

    @property
    def relative_path(self) -> str:
        """The path relative to its input root, with forward slashes."""
        return relative_path_in(self.path, self.root)

    @property
    def selected(self) -> bool:
        """Whether the file was selected."""
        return self.status == SELECTED

    def as_row(self) -> dict[str, str]:
        """Return the decision as a flat row of :data:`DECISION_COLUMNS` (path relative to its root).

        The path is escaped by :func:`pneumonia_monai.names.escape_name`, so that a name that is not
        UTF-8 can be written (and read back exactly); other cells by :func:`~pneumonia_monai.names.printable`.
        """
        row = {k: printable(str(v)) for k, v in asdict(self).items() if k not in ("path", "root")}
        row["path"] = escape_name(self.relative_path)  # lossless for names that are not UTF-8
        return {column: row[column] for column in DECISION_COLUMNS}


def relative_path_in(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form, or ``path`` itself where it is not under ``root``."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass
class SelectionResult:
    """All decisions of one :func:`pneumonia_monai.triage.select_files` run, inputs in order."""

    decisions: list[Decision]
    rules: SelectionRules

    @property
    def selected(self) -> list[Decision]:
        """The selected decisions."""
        return [d for d in self.decisions if d.status == SELECTED]

    def counts(self) -> dict[str, int]:
        """Return the number of decisions per status (every status present, possibly 0)."""
        counts = dict.fromkeys(STATUSES, 0)
        for decision in self.decisions:
            counts[decision.status] += 1
        return counts

    def studies(self) -> dict[str, dict[str, list[Decision]]]:
        """Group the selected instances Study Instance UID -> Series Instance UID -> instances."""
        grouped: dict[str, dict[str, list[Decision]]] = {}
        for decision in self.selected:
            grouped.setdefault(decision.study_uid, {}).setdefault(decision.series_uid, []).append(decision)
        return grouped


# --------------------------------------------------------------------------------- the rules


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _codes(ds: Dataset, keyword: str) -> list[tuple[str, str, str]]:
    out = []
    for item in ds.get(keyword) or []:
        scheme = str(item.get("CodingSchemeDesignator", "")).strip().upper()
        value = str(
            item.get("CodeValue", "") or item.get("LongCodeValue", "") or item.get("URNCodeValue", "")
        )
        if scheme or value:
            out.append((scheme, value.strip().upper(), str(item.get("CodeMeaning", "")).strip()))
    return out


def _show_code(code: tuple[str, str, str]) -> str:
    scheme, value, meaning = code
    return f"{scheme} {value} {meaning}".strip()


def _keyword_hit(ds: Dataset, attributes: Sequence[str], words: Sequence[str]) -> tuple[str, str] | None:
    """Return ``(word, attribute)`` for the first whole-word match, case-insensitive."""
    for attribute in attributes:
        text = _text(ds, attribute).upper()
        if not text:
            continue
        for word in words:
            if re.search(rf"(?<![A-Z0-9]){re.escape(word)}(?![A-Z0-9])", text):
                return word, attribute
    return None


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return name if name != uid else f"unknown SOP Class {uid}"


def _body_part(ds: Dataset, rules: SelectionRules) -> tuple[bool, str]:
    """Return ``(is_chest_or_kept, text)`` where text names the deciding attribute."""
    body_part = _text(ds, "BodyPartExamined").upper()
    if body_part:
        if body_part in rules.body_parts:
            return True, f"BodyPartExamined={body_part}"
        return False, f"not chest (BodyPartExamined={body_part})"
    codes = _codes(ds, "AnatomicRegionSequence")
    if codes:
        for code in codes:
            if code[:2] in rules.chest_region_codes:
                return True, f"Anatomic Region Sequence={_show_code(code)}"
        return False, f"not chest (Anatomic Region Sequence={_show_code(codes[0])})"
    hit = _keyword_hit(ds, rules.body_part_keyword_attributes, rules.body_part_keywords)
    if hit:
        return True, f"keyword {hit[0]} in {hit[1]}"
    text = (
        "body part unknown (no BodyPartExamined, no Anatomic Region Sequence, no chest keyword in "
        + "/".join(rules.body_part_keyword_attributes)
        + ")"
    )
    return rules.unknown_body_part == "keep", text


def _view(ds: Dataset, rules: SelectionRules) -> tuple[bool, str]:
    """Return ``(is_frontal_or_kept, text)`` where text names the deciding attribute."""
    view = _text(ds, "ViewPosition").upper()
    if view:
        if view in rules.frontal_views:
            return True, f"ViewPosition={view}"
        if view in rules.lateral_views:
            return False, f"lateral view (ViewPosition={view})"
        return False, f"not a frontal view (ViewPosition={view})"
    codes = _codes(ds, "ViewCodeSequence")
    if codes:
        code = codes[0]
        if code[:2] in rules.frontal_view_codes:
            return True, f"View Code Sequence={_show_code(code)}"
        if code[:2] in rules.lateral_view_codes:
            return False, f"lateral view (View Code Sequence={_show_code(code)})"
        return False, f"not a frontal view (View Code Sequence={_show_code(code)})"
    frontal = _keyword_hit(ds, rules.view_keyword_attributes, rules.frontal_view_keywords)
    lateral = _keyword_hit(ds, rules.view_keyword_attributes, rules.lateral_view_keywords)
    if lateral and not frontal:
        return False, f"lateral view (keyword {lateral[0]} in {lateral[1]})"
    if frontal and not lateral:
        return True, f"keyword {frontal[0]} in {frontal[1]}"
    text = "view unknown (no ViewPosition, no View Code Sequence, no unambiguous view keyword)"
    if rules.unknown_view == "keep":
        return True, f"{text}, assumed frontal"
    return False, text


def decide_header(header: Header, rules: SelectionRules) -> tuple[str, str]:
    """Apply the rules (steps 2 to 9 of the module docstring) to one header.

    Returns:
        ``(status, reason)`` with status ``"selected"`` or ``"skipped"``.
    """
    ds = header.dataset
    media_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    sop_class = str(ds.get("SOPClassUID", "") or media_class)
    if MediaStorageDirectoryStorage in (media_class, sop_class):
        return SKIPPED, "DICOMDIR (Media Storage SOP Class Media Storage Directory Storage)"
    for marker in rules.own_output_markers:
        if marker.matches(ds):
            return SKIPPED, f"our own output ({marker.describe()})"
    modality = _text(ds, "Modality").upper()
    if sop_class:
        name = _sop_class_name(sop_class)
        if sop_class == KeyObjectSelectionDocumentStorage:
            return SKIPPED, f"key object selection (SOP Class {name})"
        if name.endswith("SR Storage") or modality == "SR":
            return SKIPPED, f"structured report (SOP Class {name})"
        if "Presentation State" in name or modality == "PR":
            return SKIPPED, f"presentation state (SOP Class {name})"
    if not sop_class:
        return SKIPPED, "no SOP Class UID (0008,0016)"
    intent = _text(ds, "PresentationIntentType").upper()
    if intent and intent not in rules.presentation_intents:
        label = "DX For Processing" if intent == "FOR PROCESSING" else "not for presentation"
        return SKIPPED, f"{label} (Presentation Intent Type={intent})"
    if sop_class == DigitalXRayImageStorageForProcessing:
        return SKIPPED, f"DX For Processing (SOP Class {_sop_class_name(sop_class)})"
    if sop_class not in rules.kept_sop_classes:
        if sop_class in SECONDARY_CAPTURE_SOP_CLASSES:
            return SKIPPED, f"secondary capture not accepted (SOP Class {_sop_class_name(sop_class)})"
        kinds = "/".join(rules.modalities)
        return (
            SKIPPED,
            f"not a {kinds} image (SOP Class {_sop_class_name(sop_class)}, Modality={modality or '-'})",
        )
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not _text(ds, keyword):
            return SKIPPED, f"no {keyword}"
    if not header.has_pixel_data:
        return SKIPPED, "no Pixel Data (7FE0,0010)"
    capture = sop_class in SECONDARY_CAPTURE_SOP_CLASSES
    if capture:
        radiograph, capture_text = _secondary_capture(ds, rules)
        if not radiograph:
            return SKIPPED, capture_text
    chest, body_text = _body_part(ds, rules)
    if not chest:
        return SKIPPED, body_text
    frontal, view_text = _view(ds, rules)
    if not frontal:
        return SKIPPED, view_text
    if rules.outside_intended_use == "skip":
        use = intended.assess_intended_use(ds, rules.intended_age)
        if use.status == intended.NO:
            return SKIPPED, f"{OUTSIDE_INTENDED_USE} ({use.describe(rules.intended_age)})"
    if capture:
        return SELECTED, f"secondary capture chest frontal ({capture_text}; {body_text}; {view_text})"
    return SELECTED, f"{modality or 'image'} chest frontal ({body_text}; {view_text})"


def _secondary_capture(ds: Dataset, rules: SelectionRules) -> tuple[bool, str]:
    """Return ``(looks_like_a_radiograph, text)`` for a Secondary Capture, naming the deciding attribute."""
    modality = _text(ds, "Modality").upper()
    conversion = _text(ds, "ConversionType").upper()
    if modality in rules.secondary_capture_modalities:
        return True, f"Modality={modality}"
    if conversion in rules.secondary_capture_conversion_types:
        return True, f"ConversionType={conversion}"
    kept = "/".join(
        [f"Modality {m}" for m in rules.secondary_capture_modalities]
        + [f"ConversionType {c}" for c in rules.secondary_capture_conversion_types]
    )
    return False, (
        f"secondary capture not of a radiograph (Modality={modality or '-'}, "
        f"ConversionType={conversion or '-'}; kept: {kept})"
    )


def make_decision(
    path: Path,
    root: Path,
    status: str,
    reason: str,
    ds: Dataset | None = None,
    rules: SelectionRules | None = None,
) -> Decision:
    """The :class:`Decision` of one file, with the UIDs and attributes of its header ``ds`` when read.

    The intended-use verdict is filled in for a selected film (and one skipped as outside the intended
    use) when ``rules`` are given.
    """
    if ds is None:
        return Decision(path, root, status, reason)
    use = ""
    if rules is not None and (status == SELECTED or reason.startswith(OUTSIDE_INTENDED_USE)):
        use = intended_use_of(ds, rules)
    return Decision(
        path,
        root,
        status,
        reason,
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_uid=_text(ds, "SOPInstanceUID"),
        sop_class=str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "")),
        modality=_text(ds, "Modality").upper(),
        body_part=_text(ds, "BodyPartExamined").upper(),
        view=_text(ds, "ViewPosition").upper(),
        intended_use=use,
    )


def intended_use_of(ds: Dataset, rules: SelectionRules) -> str:
    """``yes``, ``no`` or ``unknown``: whether the patient of ``ds`` is in the rules' intended ages."""
    return intended.assess_intended_use(ds, rules.intended_age).status


def entry_problem(path: str | Path) -> tuple[str, str] | None:
    """Say why a folder entry is not a regular file to read: ``(status, reason)``, or ``None`` if it is one.

    Judged by ``lstat``, so links are never followed: a symbolic link is ``skipped`` (not followed), a
    dangling one or a loop is an ``error``, as are a folder that cannot be read and a path longer than
    the system's ``PATH_MAX``; a named pipe, socket or device is ``skipped`` (never opened).
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return ERROR, os_error_reason(exc, path)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        try:
            target = path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return ERROR, "symbolic link loop (not followed)"
            if exc.errno == errno.ENOENT:
                return (
                    ERROR,
                    f"dangling symbolic link (target {os.fsdecode(path.readlink())!r} does not exist)",
                )
            return ERROR, f"symbolic link to an unreadable target ({os_error_reason(exc, path)})"
        return SKIPPED, f"symbolic link to a {file_kind(target.st_mode)} (links are not followed)"
    if stat.S_ISDIR(mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            return ERROR, f"cannot read folder ({os_error_reason(exc, path)})"
        return SKIPPED, "folder"
    return SKIPPED, f"not a regular file ({file_kind(mode)}; not opened)"
