"""Checks of values before they are written into DICOM attributes (raise ``ValueError`` naming them)."""

from __future__ import annotations

import re

from pneumonia_monai import checks

#: A UID (PS3.5 9.1): components of digits separated by dots. A component with a leading zero, which PS3.5
#: forbids but some archives write, is accepted: a study is stored and referenced under the UID it came with.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def check_uid(name: str, value: object) -> str:
    """Return ``value`` if it is a DICOM UID: digits and dots, at most 64 characters (safe as a file name).

    The one UID check of the package (the SR and FHIR builders, the node's inbox, DICOMweb retrieval).

    Raises:
        ValueError: naming ``name`` and the value, if it is not a string of that form.
    """
    if not isinstance(value, str) or len(value) > 64 or not _UID.fullmatch(value):
        raise ValueError(f"{name} must be a DICOM UID (digits and dots, at most 64), got {value!r}")
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
