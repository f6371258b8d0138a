"""Names shared by the data ingest, the bundle, inference and the reports."""

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
