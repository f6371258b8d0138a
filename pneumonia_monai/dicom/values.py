"""Checks of values before they are written into DICOM attributes (raise ``ValueError`` naming them)."""

from __future__ import annotations

from pydicom.uid import RE_VALID_UID

from pneumonia_monai import checks


def check_uid(name: str, value: object) -> str:
    """Return ``value`` if it is a valid UID (pydicom's pattern, at most 64 characters)."""
    # pydicom's UID regex, without constructing a pydicom UID (which warns on invalid values).
    if not isinstance(value, str) or len(value) > 64 or not RE_VALID_UID.match(value):
        raise ValueError(f"{name} must be a valid DICOM UID, got {value!r}")
    return str(value)


def check_long_string(name: str, value: object) -> str:
    """Return ``value`` if it fits a Long String (LO): 1-64 characters, no backslash."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or "\\" in value:
        raise ValueError(
            f"{name} must be a non-empty string of at most 64 characters without '\\', got {value!r}"
        )
    return value


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int (not a bool) of 1 or more (Series/Instance Number)."""
    return checks.positive_int(name, value)
