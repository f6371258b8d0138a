"""Triage a DICOM folder: which files are chest frontal CR/DX films for presentation, and why.

Files are recognised as DICOM by their header, never by their name, and only headers are read: the pixel
data is neither read nor decoded (a deflated data set is inflated only as far as its header, within the
limits of :mod:`pneumonia_monai.dicom.limits`). Every entry found under the inputs gets exactly one
:class:`Decision` (``selected``, ``skipped`` or ``error``) with a reason that names the attribute that
decided it, e.g. ``lateral view (ViewPosition=LL)`` or ``not chest (BodyPartExamined=ABDOMEN)``.

The rules are data (:class:`SelectionRules`, loaded from ``selection_rules.yaml`` shipped with the package,
or a site's own file). They are applied in this order, the first that matches decides:

0. entries that are not regular files (:func:`entry_problem`): links (never followed) and named pipes
   (never opened) are ``skipped``; dangling links, link loops, unreadable folders and paths longer than
   ``PATH_MAX`` are ``error``;
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
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    KeyObjectSelectionDocumentStorage,
    MediaStorageDirectoryStorage,
)

from pneumonia_monai.dicom import intended_use as intended
from pneumonia_monai.dicom import limits
from pneumonia_monai.names import escape_name, printable

logger = logging.getLogger(__name__)

#: Decision statuses.
SELECTED = "selected"
SKIPPED = "skipped"
ERROR = "error"
STATUSES: tuple[str, ...] = (SELECTED, SKIPPED, ERROR)

#: The image SOP class kept for each modality name allowed in ``modalities``.
MODALITY_SOP_CLASSES: dict[str, UID] = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}

#: Secondary Capture image storage SOP classes (single-frame and the multi-frame family).
SECONDARY_CAPTURE_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)

#: Name of the default rules file, shipped beside this module.
DEFAULT_RULES_FILE = "selection_rules.yaml"

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

#: The longest path the system resolves, in bytes (Linux: 4096).
_PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096

_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_CODE = re.compile(r"^[A-Za-z0-9_.\-]+:\S+$")
_POLICIES = ("keep", "skip")
_OUTSIDE_POLICIES = ("flag", "skip")
#: Start of the reason of a film skipped for its patient's age (``outside_intended_use: skip``).
OUTSIDE_INTENDED_USE = "outside the intended use"
_MATCHERS = ("equals", "startswith", "contains")

#: Header attributes read for every file (marker and keyword attributes from the rules are added).
_BASE_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "PresentationIntentType",
    "BodyPartExamined",
    "AnatomicRegionSequence",
    "ViewPosition",
    "ViewCodeSequence",
    "ConversionType",
    *intended.KEYWORDS,
    "Rows",  # checked against an encapsulated codestream's own size
    "Columns",
)

#: What reading a corrupt header can raise (pydicom raises a variety of errors on damaged files).
HEADER_READ_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    EOFError,
    ValueError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    NotImplementedError,
    RecursionError,
    zlib.error,
)


class NotDicomError(ValueError):
    """The file is not a DICOM file (no ``DICM`` prefix and no data set at its start)."""


class TruncatedDicomError(ValueError):
    """A DICOM file ends before the lengths its header declares (an interrupted copy, typically)."""


# ------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class OwnOutputMarker:
    """An attribute test that recognises files written by pneumonia_monai.

    Attributes:
        attribute: a DICOM keyword, e.g. ``"Manufacturer"``.
        match: ``"equals"``, ``"startswith"`` or ``"contains"`` (case-insensitive).
        value: the text to look for.
    """

    attribute: str
    match: str
    value: str

    def matches(self, ds: Dataset) -> bool:
        """Return whether ``ds`` carries the marker (any value of a multi-valued attribute counts)."""
        raw = ds.get(self.attribute)
        if raw is None or raw == "":
            return False
        values = list(raw) if isinstance(raw, Iterable) and not isinstance(raw, str | bytes) else [raw]
        target = self.value.casefold()
        for item in values:
            text = str(item).strip().casefold()
            if (
                (self.match == "equals" and text == target)
                or (self.match == "startswith" and text.startswith(target))
                or (self.match == "contains" and target in text)
            ):
                return True
        return False

    def describe(self) -> str:
        """Describe the marker, e.g. ``Manufacturer=pneumonia_monai``."""
        if self.match == "equals":
            return f"{self.attribute}={self.value}"
        words = {"startswith": "starts with", "contains": "contains"}[self.match]
        return f"{self.attribute} {words} {self.value}"


@dataclass(frozen=True)
class SelectionRules:
    """The site-editable rules of :func:`select_files` (see ``selection_rules.yaml`` for each key's meaning).

    Build it with :meth:`default`, :meth:`from_file` or :meth:`from_mapping`; string lists are stored upper
    case, codes as ``(SCHEME, VALUE)`` tuples.
    """

    version: int = 1
    modalities: tuple[str, ...] = ()
    presentation_intents: tuple[str, ...] = ()
    accept_secondary_capture: bool = True
    secondary_capture_modalities: tuple[str, ...] = ()
    secondary_capture_conversion_types: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    chest_region_codes: tuple[tuple[str, str], ...] = ()
    body_part_keywords: tuple[str, ...] = ()
    body_part_keyword_attributes: tuple[str, ...] = ()
    unknown_body_part: str = "skip"
    frontal_views: tuple[str, ...] = ()
    lateral_views: tuple[str, ...] = ()
    frontal_view_codes: tuple[tuple[str, str], ...] = ()
    lateral_view_codes: tuple[tuple[str, str], ...] = ()
    frontal_view_keywords: tuple[str, ...] = ()
    lateral_view_keywords: tuple[str, ...] = ()
    view_keyword_attributes: tuple[str, ...] = ()
    unknown_view: str = "keep"
    intended_age_min_years: int = 1
    intended_age_max_years: int = 5
    outside_intended_use: str = "flag"
    own_output_markers: tuple[OwnOutputMarker, ...] = ()
    source: str = field(default="", compare=False)

    # ---- construction

    @classmethod
    def default(cls) -> SelectionRules:
        """Return the rules of the ``selection_rules.yaml`` shipped with the package."""
        text = resources.files(__package__).joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
        return cls.from_mapping(
            _load_yaml(text, DEFAULT_RULES_FILE), source=f"<package>/{DEFAULT_RULES_FILE}"
        )

    @classmethod
    def from_file(cls, path: str | Path, *, base: SelectionRules | None = None) -> SelectionRules:
        """Load a site's rules file; keys it leaves out keep the values of ``base`` (default: the package's).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the YAML is invalid, has an unknown key, or a value is out of range.
            TypeError: if a value has the wrong type.
        """
        path = Path(path)
        data = _load_yaml(path.read_text(encoding="utf-8"), str(path))
        return cls.from_mapping(data, base=base or cls.default(), source=str(path))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base: SelectionRules | None = None, source: str = "<mapping>"
    ) -> SelectionRules:
        """Validate a mapping (parsed YAML) and return the rules; keys not in ``data`` come from ``base``.

        Raises:
            ValueError: on an unknown key, an empty required list, a bad code or policy value.
            TypeError: if a value has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"{source}: the rules must be a mapping of keys, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"source"}
        for key in data:
            if key not in known:
                raise ValueError(f"{source}: unknown key {key!r} in selection rules (known: {sorted(known)})")
        if base is None:
            missing = sorted(known - set(data))
            if missing:
                raise ValueError(f"{source}: missing key(s) {missing} in selection rules")
        values: dict[str, Any] = {} if base is None else {k: getattr(base, k) for k in known}
        for key, value in data.items():
            values[key] = _convert_value(key, value, source)
        rules = cls(**values, source=source)
        rules._check(source)
        return rules

    def _check(self, source: str) -> None:
        if self.version != 1:
            raise ValueError(
                f"{source}: unsupported rules version {self.version!r} (this code reads version 1)"
            )
        for modality in self.modalities:
            if modality not in MODALITY_SOP_CLASSES:
                raise ValueError(
                    f"{source}: modality {modality!r} in 'modalities' is not one of "
                    f"{sorted(MODALITY_SOP_CLASSES)}"
                )
        if not self.modalities and not self.accept_secondary_capture:
            raise ValueError(
                f"{source}: 'modalities' is empty and secondary capture is off: nothing can be kept"
            )
        if (
            self.accept_secondary_capture
            and not self.secondary_capture_modalities
            and not self.secondary_capture_conversion_types
        ):
            raise ValueError(
                f"{source}: secondary capture is on but 'secondary_capture_modalities' and "
                "'secondary_capture_conversion_types' are both empty: no secondary capture can be kept"
            )
        if self.outside_intended_use not in _OUTSIDE_POLICIES:
            raise ValueError(
                f"{source}: 'outside_intended_use' must be one of {_OUTSIDE_POLICIES}, "
                f"got {self.outside_intended_use!r}"
            )
        try:  # the two bounds, together
            intended.AgeRange(self.intended_age_min_years, self.intended_age_max_years)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{source}: intended_age_min_years/intended_age_max_years: {exc}") from None
        for key in ("body_parts", "frontal_views", "presentation_intents"):
            if not getattr(self, key):
                raise ValueError(f"{source}: {key!r} must not be empty")
        for key in ("unknown_body_part", "unknown_view"):
            if getattr(self, key) not in _POLICIES:
                raise ValueError(f"{source}: {key!r} must be one of {_POLICIES}, got {getattr(self, key)!r}")
        overlap = set(self.frontal_views) & set(self.lateral_views)
        if overlap:
            raise ValueError(f"{source}: view(s) {sorted(overlap)} are both frontal and lateral")
        overlap_codes = set(self.frontal_view_codes) & set(self.lateral_view_codes)
        if overlap_codes:
            raise ValueError(f"{source}: code(s) {sorted(overlap_codes)} are both frontal and lateral")

    # ---- use

    @property
    def kept_sop_classes(self) -> frozenset[str]:
        """SOP Class UIDs whose instances can be selected."""
        kept = {str(MODALITY_SOP_CLASSES[m]) for m in self.modalities}
        if self.accept_secondary_capture:
            kept |= SECONDARY_CAPTURE_SOP_CLASSES
        return frozenset(kept)

    @property
    def intended_age(self) -> intended.AgeRange:
        """The intended patient ages (``intended_age_min_years`` to ``intended_age_max_years``)."""
        return intended.AgeRange(self.intended_age_min_years, self.intended_age_max_years)

    def header_keywords(self) -> tuple[str, ...]:
        """Return the keywords of every attribute the rules look at."""
        extra = [m.attribute for m in self.own_output_markers]
        extra += list(self.body_part_keyword_attributes) + list(self.view_keyword_attributes)
        return tuple(dict.fromkeys([*_BASE_KEYWORDS, *extra]))


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc


def _str_list(key: str, value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{source}: {key!r} must be a list of strings, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise TypeError(f"{source}: {key!r} must hold non-empty strings, got {item!r}")
        out.append(item.strip().upper())
    return tuple(out)


def _keyword_list(key: str, value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{source}: {key!r} must be a list of DICOM keywords, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str) or tag_for_keyword(item) is None:
            raise ValueError(f"{source}: {key!r} holds {item!r}, which is not a DICOM keyword")
    return tuple(value)


def _code_list(key: str, value: Any, source: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(
            f"{source}: {key!r} must be a list of 'SCHEME:VALUE' strings, got {type(value).__name__}"
        )
    out = []
    for item in value:
        if not isinstance(item, str) or not _CODE.match(item.strip()):
            raise ValueError(
                f"{source}: {key!r} holds {item!r}, expected 'SCHEME:VALUE' like 'SCT:272479007'"
            )
        scheme, code_value = item.strip().split(":", 1)
        out.append((scheme.upper(), code_value.upper()))
    return tuple(out)


def _markers(key: str, value: Any, source: str) -> tuple[OwnOutputMarker, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{source}: {key!r} must be a list of mappings, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, Mapping):
            raise TypeError(f"{source}: {key!r} items must be mappings, got {item!r}")
        unknown = set(item) - {"attribute", *_MATCHERS}
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {sorted(unknown)} in an {key!r} item")
        attribute = item.get("attribute")
        if not isinstance(attribute, str) or tag_for_keyword(attribute) is None:
            raise ValueError(
                f"{source}: {key!r} item has attribute {attribute!r}, which is not a DICOM keyword"
            )
        matchers = [m for m in _MATCHERS if m in item]
        if len(matchers) != 1:
            raise ValueError(f"{source}: {key!r} item {dict(item)!r} needs exactly one of {_MATCHERS}")
        text = item[matchers[0]]
        if not isinstance(text, str) or not text:
            raise TypeError(f"{source}: {key!r} item {dict(item)!r} needs a non-empty string to match")
        out.append(OwnOutputMarker(attribute, matchers[0], text))
    return tuple(out)


def _convert_value(key: str, value: Any, source: str) -> Any:
    if key == "version":
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{source}: 'version' must be an integer, got {value!r}")
        return value
    if key == "accept_secondary_capture":
        if not isinstance(value, bool):
            raise TypeError(f"{source}: 'accept_secondary_capture' must be true or false, got {value!r}")
        return value
    if key in ("unknown_body_part", "unknown_view", "outside_intended_use"):
        if not isinstance(value, str):
            choices = _OUTSIDE_POLICIES if key == "outside_intended_use" else _POLICIES
            raise TypeError(f"{source}: {key!r} must be one of {choices}, got {value!r}")
        return value.strip().lower()
    if key in ("intended_age_min_years", "intended_age_max_years"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{source}: {key!r} must be a whole number of years, got {value!r}")
        return value
    if key.endswith("_codes"):
        return _code_list(key, value, source)
    if key.endswith("_attributes"):
        return _keyword_list(key, value, source)
    if key == "own_output_markers":
        return _markers(key, value, source)
    return _str_list(key, value, source)


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
        try:
            return self.path.relative_to(self.root).as_posix()
        except ValueError:
            return self.path.as_posix()

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


# ---------------------------------------------------------------------------- header reading


@dataclass(frozen=True)
class Header:
    """A DICOM header read without its pixel data.

    Attributes:
        dataset: the attributes read (only those asked for, plus the file meta information).
        has_pixel_data: whether a non-empty Pixel Data (or Float / Double Float Pixel Data) element follows.
        has_preamble: whether the file has the 128-byte preamble and ``DICM`` prefix.
    """

    dataset: Dataset
    has_pixel_data: bool
    has_preamble: bool


def _looks_like_bare_dataset(head: bytes) -> bool:
    """Whether ``head`` plausibly starts a data set without preamble (group 0002 or 0008, little endian)."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008) or element > 0x3FFF:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    (length,) = struct.unpack("<L", head[4:8])
    return length < 0x10000


def _describe_non_dicom(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "not a DICOM file (JPEG image)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a DICOM file (PNG image)"
    return "not a DICOM file (no DICM prefix at byte 128, no data set at byte 0)"


def _pixel_data_follows(fp: BinaryIO, little_endian: bool, implicit_vr: bool) -> tuple[bool, int | None]:
    """Read the element at the file position (where ``stop_before_pixels`` stops).

    Returns:
        ``(present, value_end)``: whether it is non-empty pixel data, and the file offset where its value
        ends (``None`` for an undefined length, i.e. encapsulated pixel data).
    """
    start = fp.tell()
    chunk = fp.read(12)
    if len(chunk) < 8:
        return False, None
    endian = "<" if little_endian else ">"
    group, element = struct.unpack(f"{endian}HH", chunk[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return False, None
    if implicit_vr:
        (length,) = struct.unpack(f"{endian}L", chunk[4:8])
        header = 8
    elif chunk[4:6] in _LONG_LENGTH_VRS:
        if len(chunk) < 12:
            return False, None
        (length,) = struct.unpack(f"{endian}L", chunk[8:12])
        header = 12
    else:
        (length,) = struct.unpack(f"{endian}H", chunk[6:8])
        header = 8
    if length == 0:
        return False, None
    return True, (None if length == 0xFFFFFFFF else start + header + length)


def open_regular_file(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file: never through a link, never a pipe.

    The file is opened with ``O_NOFOLLOW`` and ``O_NONBLOCK`` (so a named pipe does not block) and checked
    with ``fstat`` on the open descriptor (no race between the check and the open).

    Raises:
        OSError: if it cannot be opened, is a symbolic link (``ELOOP``) or is not a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _dataset_start(fp: BinaryIO, force: bool) -> int:
    """The offset of the data set in the file: after the preamble and file meta, as pydicom reads them."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    fp.seek(0)
    read_preamble(fp, force)
    _read_file_meta_info(fp)
    return fp.tell()


def _structure_problem(fp: BinaryIO, start: int, size: int, little_endian: bool, implicit_vr: bool) -> str:
    """Walk the elements from ``start`` to the end, without reading values; say where the file is cut.

    Nested sequences and items of undefined length are followed with a depth count, not recursion, so
    any nesting is walked. Returns ``""`` when the data set ends at an element boundary at depth 0.
    """
    endian = "<" if little_endian else ">"
    pos, depth = start, 0
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if not head:
            return "" if depth == 0 else f"the file ends inside a sequence (nesting depth {depth})"
        if len(head) < 8:
            return f"the file ends inside an element header at byte {pos}"
        group, element = struct.unpack(f"{endian}HH", head[:4])
        if group == 0xFFFE:  # items and delimiters: tag and 4-byte length, no VR
            (length,) = struct.unpack(f"{endian}L", head[4:8])
            if element in (0xE00D, 0xE0DD):
                depth = max(depth - 1, 0)
                pos += 8
                continue
            if length == 0xFFFFFFFF:
                depth += 1
                pos += 8
                continue
            header = 8
        elif implicit_vr:
            (length,) = struct.unpack(f"{endian}L", head[4:8])
            header = 8
        elif head[4:6] in _LONG_LENGTH_VRS:
            more = fp.read(4)
            if len(more) < 4:
                return f"the file ends inside the header of element ({group:04X},{element:04X}) at byte {pos}"
            (length,) = struct.unpack(f"{endian}L", more)
            header = 12
        else:
            (length,) = struct.unpack(f"{endian}H", head[6:8])
            header = 8
        if length == 0xFFFFFFFF:
            depth += 1
            pos += header
            continue
        end = pos + header + length
        if end > size:
            return f"element ({group:04X},{element:04X}) at byte {pos} needs {end} bytes, file has {size}"
        pos = end


def read_header(path: str | Path, keywords: Sequence[str] | None = None) -> Header:
    """Read a DICOM file's header (never its pixel data) and tell whether it has pixel data.

    The file is recognised by its ``DICM`` prefix, or, for files written without preamble and file meta
    information, by a plausible first element of group 0002 or 0008. Pixel data presence is found without
    reading it: pydicom stops at, and rewinds to, the top-level (7FE0,0010) element when told
    ``stop_before_pixels``, so the element's tag and length are the next bytes of the file.

    Args:
        path: the file.
        keywords: the attributes to read (default: all but pixel data); the file meta is always read.

    Raises:
        NotDicomError: if the file is not DICOM.
        TruncatedDicomError: if the file ends before its file meta, an element or its Pixel Data does.
        SizeLimitError: if an encapsulated codestream claims more than the pixel budget or another size
            than Rows x Columns (read from frame 0's first bytes, see :func:`limits.check_codestream`).
        DeflateError: if a deflated data set is corrupt or inflates past its limit.
        InvalidDicomError, OSError, ValueError, EOFError, struct.error: if the header cannot be parsed.
    """
    path = Path(path)
    specific = None if keywords is None else [tag_for_keyword(k) for k in keywords]
    if specific is not None and None in specific:
        bad = [k for k in keywords or () if tag_for_keyword(k) is None]
        raise ValueError(f"not DICOM keyword(s): {bad}")
    with open_regular_file(path) as fp:
        head = fp.read(132)
        has_preamble = len(head) == 132 and head[128:132] == b"DICM"
        if not has_preamble and not _looks_like_bare_dataset(head):
            raise NotDicomError(_describe_non_dicom(head))
        size = os.fstat(fp.fileno()).st_size
        fp.seek(0)
        ds, inflated = limits.read_dicom(
            fp, force=not has_preamble, stop_before_pixels=True, specific_tags=specific
        )
        meta_length = ds.file_meta.get("FileMetaInformationGroupLength")
        if has_preamble and isinstance(meta_length, int) and 144 + meta_length > size:
            raise TruncatedDicomError(
                f"truncated file (file meta information needs {144 + meta_length} bytes)"
            )
        if fp.tell() > size:
            raise TruncatedDicomError(
                f"truncated file (an element ends at byte {fp.tell()}, file has {size})"
            )
        if not has_preamble and "SOPClassUID" not in ds and "SOPInstanceUID" not in ds and not ds.file_meta:
            raise NotDicomError("not a DICOM file (no DICM prefix and no SOP Class/Instance UID at byte 0)")
        implicit_vr, little_endian = ds.original_encoding
        # A deflated data set is read through its inflating reader, inflated only as far as the header.
        stream: Any = inflated if inflated is not None else fp
        has_pixels, value_end = _pixel_data_follows(stream, bool(little_endian), bool(implicit_vr))
        if has_pixels and value_end is None and inflated is None and not implicit_vr:
            # encapsulated: the codestream's own size, from frame 0's first bytes (as infer checks it)
            syntax = ds.file_meta.get("TransferSyntaxUID")
            if syntax is not None:
                limits.check_codestream(ds, str(syntax), limits.read_encapsulated_head(fp))
        if not has_pixels and inflated is not None:
            inflated.seek(0, os.SEEK_END)  # the walk below reads to the end: inflate it (bounded)
        stream_size = size if inflated is None else inflated.drain()  # counted, not kept
        if value_end is not None and value_end > stream_size:
            raise TruncatedDicomError(
                f"truncated file (Pixel Data ends at byte {value_end}, file has {stream_size})"
            )
        if not has_pixels:
            # pydicom stops quietly where a file cut inside its header ends: walk the elements to tell a
            # data set without pixel data from a damaged one.
            start = 0 if inflated is not None else _dataset_start(fp, not has_preamble)
            problem = _structure_problem(stream, start, stream_size, bool(little_endian), bool(implicit_vr))
            if problem:
                raise TruncatedDicomError(f"truncated file ({problem}; no Pixel Data reached)")
    return Header(ds, has_pixels, has_preamble)


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
    """Decide a film that is not DICOM by its name (:mod:`pneumonia_monai.data.formats`), or None.

    A file named as a JPEG, PNG or TIFF picture is taken as a frontal chest film; a NIfTI, MetaImage or
    NRRD file is decided from its header (:func:`pneumonia_monai.transforms.volume_io.film_decision`:
    one 2-D grey film is selected, a volume of more slices, a 4-D or vector file skipped, each with its
    reason); the ``.raw`` / ``.zraw`` voxel data beside a ``.mhd`` header of the same name is skipped as such.
    A file that is DICOM by its header is never decided here, whatever its name.
    """
    from pneumonia_monai.data.formats import (
        PICTURE_SUFFIXES,
        VOLUME_SUFFIXES,
        film_suffix,
        metaimage_header_of,
    )
    from pneumonia_monai.dicom.io import is_dicom

    suffix = film_suffix(path)
    header = metaimage_header_of(path)
    if header is not None:
        return SKIPPED, f"MetaImage voxel data of {header.name} (read through that header)"
    if (suffix not in PICTURE_SUFFIXES and suffix not in VOLUME_SUFFIXES) or is_dicom(path):
        return None
    if suffix in PICTURE_SUFFIXES:
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
        return ERROR, _os_error_reason(exc, path)
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
            return ERROR, f"symbolic link to an unreadable target ({_os_error_reason(exc, path)})"
        return SKIPPED, f"symbolic link to a {_kind(target.st_mode)} (links are not followed)"
    if stat.S_ISDIR(mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            return ERROR, f"cannot read folder ({_os_error_reason(exc, path)})"
        return SKIPPED, "folder"
    return SKIPPED, f"not a regular file ({_kind(mode)}; not opened)"


def _os_error_reason(exc: OSError, path: str | Path) -> str:
    if exc.errno == errno.ENAMETOOLONG or len(os.fsencode(Path(path).absolute())) >= _PATH_MAX:
        return f"path longer than PATH_MAX ({_PATH_MAX} bytes)"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def iter_input_files(inputs: Sequence[str | Path]) -> Iterator[tuple[Path, Path]]:
    """Yield ``(entry, root)`` for every entry under the inputs: inputs in order, sorted within a folder.

    Every entry found is yielded, not only regular files, so that each gets a decision
    (:func:`entry_problem`): symbolic links (to files or folders: not followed), named pipes and
    other special files, and folders that cannot be read (or whose path is longer than ``PATH_MAX``).
    An input named on the command line is followed when it is a link (a file input is replaced by its
    target). An entry reached twice (overlapping inputs) is yielded once.

    Raises:
        FileNotFoundError: if an input does not exist.
    """
    seen: set[str] = set()
    for item in inputs:
        top = Path(item)
        if not top.exists():
            raise FileNotFoundError(f"input not found: {top}")
        if top.is_file():
            if top.is_symlink():  # named by the user: its target is the input
                top = Path(os.path.realpath(top))
            candidates: Iterable[tuple[Path, Path]] = [(top, top.parent)]
        else:
            candidates = ((p, top) for p in _walk_sorted(top))
        for path, root in candidates:
            # The entry's own name is not resolved: a link or a loop is the entry itself.
            key = str(Path(os.path.realpath(path.parent)) / path.name)
            if key in seen:
                continue
            seen.add(key)
            yield path, root


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:  # a path longer than PATH_MAX: its folder gets the row
        return False


def _walk_sorted(root: Path) -> list[Path]:
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        if exc.filename is not None:
            found.append(Path(os.fsdecode(exc.filename)))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        base = Path(folder)
        found += [base / name for name in files]
        # os.walk lists links to folders with the folders and does not enter them: they get a row too
        found += [base / name for name in dirs if _is_link(base / name)]
    return sorted(found, key=lambda p: p.relative_to(root).parts)


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
    first_by_sop: dict[str, Decision] = {}
    for path, root in progress(files) if progress is not None else files:
        decision = decide_file(path, rules, root=root)
        if decision.status == SELECTED:
            first = first_by_sop.get(decision.sop_uid)
            if first is not None:
                reason = f"duplicate SOP Instance UID of {first.relative_path}"
                decision = replace(decision, status=SKIPPED, reason=reason)
            else:
                first_by_sop[decision.sop_uid] = decision
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
