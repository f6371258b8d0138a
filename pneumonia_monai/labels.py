"""The label vocabulary: label modes, class names, subtypes, and how label text maps to them.

One place for every path that reads or writes labels (the Kaggle scan and datalists, the DICOM archive's
labels CSV, evaluation's label files, the bundle handlers):

- a film's label is ``normal`` or ``pneumonia`` and its subtype one of :data:`SUBTYPES` (``none`` for a
  normal film, ``unknown`` where nothing says);
- label text is read case-insensitively through :data:`LABEL_NAMES` (``bacteria`` and ``virus`` are the
  Kaggle file names' words for ``bacterial`` and ``viral``);
- the label value written in a datalist depends on the label mode (:data:`LABEL_MODES`):
  ``binary`` gives normal 0, pneumonia 1; ``subtype`` gives normal 0, bacterial 1, viral 2, and a pneumonia
  of unknown subtype no value (:func:`label_value`); the index is the class's index in :data:`CLASS_NAMES`.
"""

from __future__ import annotations

from typing import Final

#: Label modes: two classes (normal / pneumonia) or three (normal / bacterial / viral).
LABEL_MODES: Final[tuple[str, ...]] = ("binary", "subtype")

#: Class names by number of classes; index = label value written in datalists.
CLASS_NAMES: Final[dict[int, tuple[str, ...]]] = {
    2: ("normal", "pneumonia"),
    3: ("normal", "bacterial", "viral"),
}

#: Subtype values written in datalists ("none" for normal films, "unknown" where a name does not say).
SUBTYPES: Final[tuple[str, ...]] = ("none", "bacterial", "viral", "unknown")

#: Accepted label words (case-insensitive) -> the canonical name.
LABEL_NAMES: Final[dict[str, str]] = {
    "normal": "normal",
    "pneumonia": "pneumonia",
    "bacterial": "bacterial",
    "bacteria": "bacterial",
    "viral": "viral",
    "virus": "viral",
}

#: Canonical name -> ``(label, subtype)``.
_LABEL_AND_SUBTYPE: Final[dict[str, tuple[str, str]]] = {
    "normal": ("normal", "none"),
    "pneumonia": ("pneumonia", "unknown"),
    "bacterial": ("pneumonia", "bacterial"),
    "viral": ("pneumonia", "viral"),
}

#: Accepted label strings (case-insensitive) -> ``(label, subtype)``.
LABEL_STRINGS: Final[dict[str, tuple[str, str]]] = {
    word: _LABEL_AND_SUBTYPE[name] for word, name in LABEL_NAMES.items()
}

#: Accepted values of a ``subtype`` field that name a subtype (case-insensitive) -> the subtype.
SUBTYPE_STRINGS: Final[dict[str, str]] = {
    word: name for word, name in LABEL_NAMES.items() if name in ("bacterial", "viral")
}

#: ``subtype`` field values that say nothing (the label decides).
_NEUTRAL_SUBTYPES = frozenset({"", "unknown", "none"})


def class_names(num_classes: int) -> tuple[str, ...]:
    """Return the class names of a model with ``num_classes`` outputs.

    Args:
        num_classes: 2 (normal / pneumonia) or 3 (normal / bacterial / viral).

    Raises:
        ValueError: if ``num_classes`` is neither 2 nor 3.
    """
    try:
        return CLASS_NAMES[int(num_classes)]
    except KeyError:
        raise ValueError(f"num_classes must be 2 or 3, got {num_classes!r}") from None


def check_label_mode(label_mode: str) -> str:
    """Return ``label_mode`` if it is one of :data:`LABEL_MODES`.

    Raises:
        ValueError: naming the bad mode.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    return label_mode


def label_value(label: str, subtype: str, label_mode: str) -> int | None:
    """Return the datalist label of a film, or ``None`` where the mode cannot label it.

    Binary: normal 0, pneumonia 1. Subtype: normal 0, bacterial 1, viral 2; a pneumonia of unknown subtype
    has no subtype label (``None``).

    Raises:
        ValueError: on an unknown mode, label or subtype.
    """
    check_label_mode(label_mode)
    if label not in CLASS_NAMES[2]:
        raise ValueError(f"label must be one of {CLASS_NAMES[2]}, got {label!r}")
    if label_mode == "binary":
        return CLASS_NAMES[2].index(label)
    if label == "normal":
        return 0
    if subtype in ("bacterial", "viral"):
        return CLASS_NAMES[3].index(subtype)
    if subtype == "unknown":
        return None
    raise ValueError(f"subtype of a pneumonia film must be bacterial, viral or unknown, got {subtype!r}")


def stratum(label: str, subtype: str) -> str:
    """The class a patient split stratifies on: ``normal``, or the pneumonia's subtype (maybe ``unknown``)."""
    return subtype if label == "pneumonia" else "normal"


def parse_label(raw_label: str, raw_subtype: str = "") -> tuple[str, str] | str:
    """Read a label field and an optional subtype field: ``(label, subtype)``, or a message naming the fault.

    The subtype field is read when the label is ``pneumonia``; it must not contradict a label that names
    a subtype, nor give one to a normal label.
    """
    parsed = LABEL_STRINGS.get(raw_label.lower())
    if parsed is None:
        return f"unknown label {raw_label!r} (known: {', '.join(LABEL_STRINGS)})"
    label, subtype = parsed
    subtype_key = raw_subtype.lower()
    if subtype_key in _NEUTRAL_SUBTYPES:
        return label, subtype
    if subtype_key not in SUBTYPE_STRINGS:
        return f"unknown subtype {raw_subtype!r} (known: {', '.join(SUBTYPE_STRINGS)}, unknown)"
    if label == "normal":
        return f"subtype {raw_subtype!r} given for a normal label"
    if subtype != "unknown" and subtype != SUBTYPE_STRINGS[subtype_key]:
        return f"label {raw_label!r} contradicts subtype {raw_subtype!r}"
    return label, SUBTYPE_STRINGS[subtype_key]
