"""One DICOM sniffer: ``is_dicom`` and the selection's ``read_header`` agree on what is DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from pneumonia_monai.dicom.header import NotDicomError, has_dicom_prefix, is_dicom, read_header
from pneumonia_monai.triage import decide_file


def _data_file(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def _without_preamble(name: str, target: Path) -> Path:
    """The data set of a pydicom test file written without preamble and file meta (as old PACS do)."""
    raw = _data_file(name).read_bytes()
    assert has_dicom_prefix(raw[:132])
    meta_length = int.from_bytes(raw[140:144], "little")  # (0002,0000) UL, right after DICM
    target.write_bytes(raw[144 + meta_length :])
    return target


def _files(tmp_path: Path) -> dict[str, tuple[Path, bool]]:
    jpeg = tmp_path / "photo.dcm"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(jpeg, format="JPEG")
    text = tmp_path / "notes.dcm"
    text.write_text("patient list\n")
    almost = tmp_path / "almost"
    almost.write_bytes(b"\x08\x00" + b"\xff" * 40)
    return {
        "preamble": (_data_file("RG1_UNCR.dcm"), True),
        "bare implicit": (_without_preamble("MR_small_implicit.dcm", tmp_path / "bare_implicit"), True),
        "bare big endian": (_without_preamble("MR_small_bigendian.dcm", tmp_path / "bare_be"), True),
        "bare, group length first": (_data_file("OT-PAL-8-face.dcm"), True),
        "jpeg": (jpeg, False),
        "text": (text, False),
        "group 0008 then noise": (almost, False),
    }


def test_is_dicom_and_read_header_agree(tmp_path: Path) -> None:
    for name, (path, expected) in _files(tmp_path).items():
        assert is_dicom(path) is expected, name
        if expected:
            header = read_header(path, ["SOPClassUID", "Modality"])
            assert header.dataset.SOPClassUID, name
            assert header.has_preamble is (name == "preamble")
        else:
            with pytest.raises(NotDicomError, match="not a DICOM file"):
                read_header(path)


def test_big_endian_file_without_preamble_is_decided_as_dicom(tmp_path: Path) -> None:
    """The selection once took a big-endian data set without preamble for "not a DICOM file"."""
    path = _without_preamble("MR_small_bigendian.dcm", tmp_path / "bare_be")
    decision = decide_file(path)
    assert decision.status == "skipped"
    assert decision.reason.startswith("not a CR/DX image (SOP Class MR Image Storage")


def test_read_header_tells_a_bare_dataset_by_its_uids_whatever_keywords_are_asked(tmp_path: Path) -> None:
    path = _without_preamble("MR_small_implicit.dcm", tmp_path / "bare_implicit")
    ds = read_header(path, ["PatientID"]).dataset  # a group 0010 keyword alone
    assert "SOPInstanceUID" in ds and "PatientID" in ds
