"""Checks of the DICOM files the tests write: dicom3tools' ``dciodvfy``, the one way they are run."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """Run dicom3tools' dciodvfy; return its error and warning lines (fails if it is not installed)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail(
            "dciodvfy (dicom3tools) is required to validate DICOM outputs: apt-get install dicom3tools"
        )
    result = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def assert_valid(path: Path, accepted: Sequence[re.Pattern[str]] = ()) -> None:
    """dciodvfy finds no error, and no warning but those ``accepted`` matches (each module says why)."""
    errors, warnings = dciodvfy(path)
    assert errors == []
    assert [w for w in warnings if not any(p.search(w) for p in accepted)] == []
