"""The site-editable rules of DICOM selection: their schema, validation and loading.

:class:`SelectionRules` is loaded from ``selection_rules.yaml`` shipped with the package
(:meth:`SelectionRules.default`) or a site's own file (:meth:`SelectionRules.from_file`, keys it leaves out
keep the package's values). Every value is checked up front: an unknown key, a wrong type, an empty required
list or a policy outside its choices raises with the key and the bad value. The rules are applied by
:mod:`pneumonia_monai.dicom.selection`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID, ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation

from pneumonia_monai import checks
from pneumonia_monai.dicom import intended_use as intended

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

_CODE = re.compile(r"^[A-Za-z0-9_.\-]+:\S+$")
_POLICIES = ("keep", "skip")
_OUTSIDE_POLICIES = ("flag", "skip")
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
    """The site-editable rules of :func:`pneumonia_monai.triage.select_files`.

    See ``selection_rules.yaml`` for each key's meaning.

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
        try:
            return checks.flag("'accept_secondary_capture'", value)
        except TypeError as exc:
            raise TypeError(f"{source}: {exc}") from exc
    if key in ("unknown_body_part", "unknown_view", "outside_intended_use"):
        if not isinstance(value, str):
            choices = _OUTSIDE_POLICIES if key == "outside_intended_use" else _POLICIES
            raise TypeError(f"{source}: {key!r} must be one of {choices}, got {value!r}")
        return value.strip().lower()
    if key in ("intended_age_min_years", "intended_age_max_years"):
        return checks.integer(f"{source}: {key!r}", value, what="a whole number of years")
    if key.endswith("_codes"):
        return _code_list(key, value, source)
    if key.endswith("_attributes"):
        return _keyword_list(key, value, source)
    if key == "own_output_markers":
        return _markers(key, value, source)
    return _str_list(key, value, source)
