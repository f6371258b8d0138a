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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForProcessing,
    KeyObjectSelectionDocumentStorage,
    MediaStorageDirectoryStorage,
)

from pneumonia_monai import formats
from pneumonia_monai.dicom import intended_use as intended
from pneumonia_monai.dicom import limits
from pneumonia_monai.dicom.duplicates import FirstOfSop, duplicate_reason
from pneumonia_monai.dicom.header import (
    HEADER_READ_ERRORS,
    Header,
    NotDicomError,
    TruncatedDicomError,
    is_dicom,
    read_header,
)
from pneumonia_monai.dicom.rules import SECONDARY_CAPTURE_SOP_CLASSES, SelectionRules
from pneumonia_monai.dicom.walk import file_kind, iter_input_files, os_error_reason
from pneumonia_monai.names import JUNK_REASON, escape_name, is_junk, printable

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
    """What :func:`select_files` decided for one file.

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
        return _relative_path(self.path, self.root)

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


def _relative_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


@dataclass
class SelectionResult:
    """All decisions of one :func:`select_files` run, in input order then sorted path order."""

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


def _decision(
    path: Path,
    root: Path,
    status: str,
    reason: str,
    ds: Dataset | None = None,
    rules: SelectionRules | None = None,
) -> Decision:
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


def decide_file(
    path: str | Path, rules: SelectionRules | None = None, *, root: str | Path | None = None
) -> Decision:
    """Decide one file (without the duplicate check, which needs the other files).

    Args:
        path: the file.
        rules: the rules (default: the package's).
        root: the input folder it belongs to (default: its parent), for :attr:`Decision.relative_path`.
    """
    path = Path(path)
    rules = rules or SelectionRules.default()
    root_path = Path(root) if root is not None else path.parent
    if is_junk(_relative_path(path, root_path)):
        return _decision(path, root_path, SKIPPED, JUNK_REASON)
    entry = entry_problem(path)
    if entry is not None:
        return _decision(path, root_path, *entry)
    try:
        if path.stat().st_size == 0:
            return _decision(path, root_path, SKIPPED, "zero-byte file")
        film = decide_film_file(path)
        if film is not None:
            return _decision(path, root_path, *film)
        header = read_header(path, rules.header_keywords())
    except NotDicomError as exc:
        return _decision(path, root_path, SKIPPED, str(exc))
    except TruncatedDicomError as exc:
        logger.warning("%s is truncated", path)
        return _decision(path, root_path, ERROR, str(exc))
    except (limits.SizeLimitError, limits.DeflateError) as exc:
        logger.warning("%s: %s", path, type(exc).__name__)
        return _decision(path, root_path, ERROR, str(exc))
    except RecursionError:
        logger.warning("cannot read the DICOM header of %s: RecursionError", path)
        return _decision(
            path, root_path, ERROR, "unreadable DICOM header (sequences nested too deeply to read)"
        )
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, type(exc).__name__)
        return _decision(
            path, root_path, ERROR, f"cannot read file ({type(exc).__name__}: {exc.strerror or exc})"
        )
    except HEADER_READ_ERRORS as exc:
        logger.warning("cannot read the DICOM header of %s: %s", path, type(exc).__name__)
        return _decision(path, root_path, ERROR, f"unreadable DICOM header ({type(exc).__name__}: {exc})")
    status, reason = decide_header(header, rules)
    return _decision(path, root_path, status, reason, header.dataset, rules)


def decide_film_file(path: str | Path) -> tuple[str, str] | None:
    """Decide a film that is not DICOM by its name (:mod:`pneumonia_monai.formats`), or None.

    A file named as a JPEG, PNG or TIFF picture is taken as a frontal chest film; a NIfTI, MetaImage or
    NRRD file is decided from its header (:func:`pneumonia_monai.transforms.volume_io.film_decision`:
    one 2-D grey film is selected, a volume of more slices, a 4-D or vector file skipped, each with its
    reason); the ``.raw`` / ``.zraw`` voxel data beside a ``.mhd`` header of the same name is skipped as such.
    A file that is DICOM by its header is never decided here, whatever its name.
    """
    suffix = formats.film_suffix(path)
    header = formats.metaimage_header_of(path)
    if header is not None:
        return SKIPPED, f"MetaImage voxel data of {header.name} (read through that header)"
    if suffix not in formats.FILM_SUFFIXES or is_dicom(path):
        return None
    if suffix in formats.PICTURE_SUFFIXES:
        return SELECTED, f"{suffix.lstrip('.').upper()} image, taken as a frontal chest film"
    from pneumonia_monai.transforms.volume_io import film_decision

    return film_decision(path)


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


def select_files(
    inputs: Sequence[str | Path],
    rules: SelectionRules | None = None,
    *,
    progress: Callable[[Iterable[tuple[Path, Path]]], Iterable[tuple[Path, Path]]] | None = None,
) -> SelectionResult:
    """Decide every file under ``inputs``: one :class:`Decision` per file, in a stable order.

    Args:
        inputs: files and folders (searched recursively; every file is looked at, whatever its name).
        rules: the rules (default: the package's ``selection_rules.yaml``).
        progress: wraps the file iterator to show progress (e.g. ``tqdm``); called once.

    Raises:
        ValueError: if ``inputs`` is empty.
        FileNotFoundError: if an input does not exist.
    """
    if isinstance(inputs, str | Path):
        raise TypeError("inputs must be a sequence of paths, not a single path")
    if not inputs:
        raise ValueError("select_files needs at least one input path")
    for item in inputs:
        if not Path(item).exists():
            raise FileNotFoundError(f"input not found: {item}")
    rules = rules or SelectionRules.default()
    files = list(iter_input_files(inputs))
    decisions: list[Decision] = []
    sops = FirstOfSop()
    for path, root in progress(files) if progress is not None else files:
        decision = decide_file(path, rules, root=root)
        if decision.status == SELECTED:  # the first selected file of a SOP Instance UID wins
            first = sops.hold(decision.sop_uid, decision.relative_path)
            if first is not None:
                decision = replace(decision, status=SKIPPED, reason=duplicate_reason(first))
        logger.debug("%s: %s (%s)", decision.relative_path, decision.status, decision.reason)
        decisions.append(decision)
    result = SelectionResult(decisions, rules)
    counts = result.counts()
    logger.info(
        "%d file(s): %d selected in %d study(ies), %d skipped, %d unreadable",
        len(decisions),
        counts[SELECTED],
        len(result.studies()),
        counts[SKIPPED],
        counts[ERROR],
    )
    return result
