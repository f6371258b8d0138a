"""One UID check (dicom.values.check_uid, name first like every validator): SR, FHIR, node, DICOMweb."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumonia_monai.dicom.values import check_uid
from pneumonia_monai.dicomweb.pull import retrieve_instance
from pneumonia_monai.node.inbox import Inbox


def test_check_uid_accepts_uids_and_returns_them() -> None:
    for uid in ("1.2.840.10008.5.1.4.1.1.1", "2.25.1234567890", "1.2.03.4", "9" * 64):
        assert check_uid("uid", uid) == uid


@pytest.mark.parametrize(
    "value",
    ["", "1..2", ".1.2", "1.2.", "1.2\n", "1.2/../3", "1.2.a", "\u0661.\u0662", "9" * 65, None, 1.2, b"1.2"],
)
def test_check_uid_rejects_naming_the_value(value: object) -> None:
    with pytest.raises(
        ValueError, match=r"^study_uid must be a DICOM UID \(digits and dots, at most 64\), got "
    ):
        check_uid("study_uid", value)


def test_the_node_and_dicomweb_use_it(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "work", stable_seconds=0, queue_size=1)
    assert inbox.study_dir("1.2.3").name == "1.2.3"
    with pytest.raises(ValueError, match="study_uid must be a DICOM UID"):
        inbox.study_dir("../1.2")
    with pytest.raises(ValueError, match="series_uid must be a DICOM UID"):
        retrieve_instance("http://127.0.0.1:1/dicom-web", "1.2", "x", "1.3", tmp_path / "out")
