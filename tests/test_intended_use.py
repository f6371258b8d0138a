"""Intended use from Patient's Age, else Patient's Birth Date with Study or Acquisition Date."""

from __future__ import annotations

import datetime
import io
import logging
import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from pneumonia_monai.dicom.intended_use import (
    ACQUISITION_DATE,
    NO,
    PATIENT_AGE,
    PATIENT_BIRTH_DATE,
    STUDY_DATE,
    UNKNOWN,
    YES,
    AgeRange,
    IntendedUse,
    age_in_years,
    assess_intended_use,
    years_between,
)

PEDIATRIC = AgeRange(1, 5)


def header(**values: str) -> Dataset:
    """A header read back from bytes, so that its elements are raw as they are after a file read."""
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.preamble = b"\0" * 128
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=False)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("062Y", 62),
        ("005Y", 5),
        ("018M", 1),
        ("011M", 0),
        ("072M", 6),
        ("052W", 0),
        ("053W", 1),
        ("400D", 1),
        ("364D", 0),
        ("62Y", 62),  # not padded: still read
        ("000Y", None),  # what equipment writes when it does not know
        ("062", None),
        ("", None),
        ("sixty", None),
    ],
)
def test_patient_age_values(value: str, years: int | None) -> None:
    assert age_in_years(value) == years


def test_completed_years_between_dates() -> None:
    assert years_between(datetime.date(1940, 6, 1), datetime.date(2004, 5, 31)) == 63
    assert years_between(datetime.date(1940, 6, 1), datetime.date(2004, 6, 1)) == 64
    assert years_between(datetime.date(2004, 6, 1), datetime.date(2004, 5, 31)) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"PatientAge": "062Y"}, IntendedUse(NO, PATIENT_AGE)),
        (
            {"PatientAge": "003Y", "PatientBirthDate": "19400101", "StudyDate": "20040826"},
            IntendedUse(YES, PATIENT_AGE),
        ),
        ({"PatientAge": "018M"}, IntendedUse(YES, PATIENT_AGE)),
        ({"PatientAge": "006M"}, IntendedUse(NO, PATIENT_AGE)),
        (
            {"PatientAge": "000Y", "PatientBirthDate": "20200301", "StudyDate": "20230301"},
            IntendedUse(YES, f"{PATIENT_BIRTH_DATE} and {STUDY_DATE}"),
        ),
        (
            {"PatientBirthDate": "20200301", "StudyDate": "2023", "AcquisitionDate": "20260302"},
            IntendedUse(NO, f"{PATIENT_BIRTH_DATE} and {ACQUISITION_DATE}"),
        ),
        ({"PatientBirthDate": "20200301"}, IntendedUse(UNKNOWN)),
        ({"PatientBirthDate": "2020-03-01", "StudyDate": "20230301"}, IntendedUse(UNKNOWN)),
        ({"PatientBirthDate": "20250301", "StudyDate": "20230301"}, IntendedUse(UNKNOWN)),  # born after
        ({"PatientBirthDate": "20200231", "StudyDate": "20230301"}, IntendedUse(UNKNOWN)),  # no 31 Feb
        ({}, IntendedUse(UNKNOWN)),
    ],
)
def test_assessment_sources_in_order(values: dict[str, str], expected: IntendedUse) -> None:
    with pydicom.config.disable_value_validation():  # the test writes invalid values on purpose
        ds = header(**values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # invalid values are read raw: pydicom never warns (with the value)
        assert assess_intended_use(ds, PEDIATRIC) == expected


def test_rg1_from_birth_and_study_dates(caplog: pytest.LogCaptureFixture) -> None:
    rg1 = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    assert (
        "PatientAge" not in rg1
        and rg1.PatientBirthDate.startswith("1940")
        and rg1.StudyDate.startswith("2004")
    )
    with caplog.at_level(logging.DEBUG):
        use = assess_intended_use(rg1, PEDIATRIC)
    assert use == IntendedUse(NO, f"{PATIENT_BIRTH_DATE} and {STUDY_DATE}")
    assert use.describe(PEDIATRIC) == (
        "outside patient age 1 to 5 years (from Patient's Birth Date (0010,0030) and Study Date (0008,0020))"
    )
    assert assess_intended_use(rg1, AgeRange(18, 150)).status == YES
    assert caplog.records == []  # nothing logged, so no age or date either


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="is above max_years"):
        AgeRange(6, 5)
    with pytest.raises(TypeError, match=r"min_years must be an integer number of years, got 1\.5"):
        AgeRange(1.5, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_years must be in \[0, 150\], got -1"):
        AgeRange(0, -1)
    with pytest.raises(ValueError, match="status must be one of"):
        IntendedUse("maybe")
    with pytest.raises(TypeError, match="ds must be a pydicom Dataset, got dict"):
        assess_intended_use({}, PEDIATRIC)  # type: ignore[arg-type]
