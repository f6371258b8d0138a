"""Grad-CAM overlays as DICOM Secondary Capture (:mod:`pneumonia_monai.dicom.secondary_capture`)."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_checks import assert_valid
from dicom_factory import with_unknown_vr
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import SecondaryCaptureImageStorage
from repo_paths import SAMPLE_TREE

from pneumonia_monai.dicom.secondary_capture import build_heatmap_sc
from pneumonia_monai.dicom.writer import write_dataset_atomic
from pneumonia_monai.visualize.overlay import overlay

ALGORITHM = {"algorithm_name": "densenet121-pneumonia", "algorithm_version": "1.2.3"}
SAMPLE = SAMPLE_TREE / "train" / "PNEUMONIA"

#: dciodvfy warnings accepted: RG1's Referring Physician's Name "ward", copied from the source as the
#: Study module must be, is an old Person Name form.
ACCEPTED_WARNINGS = (
    re.compile(r"\(0x0008,0x0090\) PN Referring Physician's Name .* Retired Person Name form"),
)


@pytest.fixture(scope="module")
def rg1() -> pydicom.Dataset:
    """pydicom-data's RG1: a real chest CR, lossy (JPEG 2000) compressed, no Burned In Annotation."""
    return pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)


@pytest.fixture(scope="module")
def film_overlay() -> np.ndarray:
    """A real 224x224 chest film of the bundle's sample with a made-up heatmap on its lower right."""
    path = sorted(SAMPLE.glob("*.jpeg"))[0]
    with Image.open(path) as img:
        grey = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    cam = np.zeros((7, 7))
    cam[4:, 4:] = 1.0
    return overlay(grey, cam)


def write_and_read(ds: pydicom.Dataset, tmp_path: Path) -> tuple[Path, pydicom.Dataset]:
    path = tmp_path / "heatmap.dcm"
    write_dataset_atomic(ds, path)
    return path, pydicom.dcmread(path)


def test_round_trip(rg1: pydicom.Dataset, film_overlay: np.ndarray, tmp_path: Path) -> None:
    sc = build_heatmap_sc(rg1, film_overlay, **ALGORITHM)
    path, back = write_and_read(sc, tmp_path)
    assert_valid(path, ACCEPTED_WARNINGS)

    # Pixels: the overlay, as RGB, unchanged.
    assert back.SOPClassUID == SecondaryCaptureImageStorage
    assert back.PhotometricInterpretation == "RGB"
    assert back.SamplesPerPixel == 3
    assert back.BitsAllocated == 8
    assert (back.Rows, back.Columns) == film_overlay.shape[:2]
    np.testing.assert_array_equal(back.pixel_array, film_overlay)

    # Same study and patient, new series and instance.
    assert back.StudyInstanceUID == rg1.StudyInstanceUID
    assert back.SeriesInstanceUID not in (rg1.SeriesInstanceUID, rg1.StudyInstanceUID, rg1.SOPInstanceUID)
    assert back.SOPInstanceUID not in (rg1.SeriesInstanceUID, rg1.StudyInstanceUID, rg1.SOPInstanceUID)
    assert back.SOPInstanceUID != back.SeriesInstanceUID
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyID",
        "AccessionNumber",
    ):
        assert back[keyword].value == rg1[keyword].value, keyword
    assert back.StudyDescription == rg1.StudyDescription
    assert (back.SeriesNumber, back.InstanceNumber) == (991, 1)

    # Derivation and labelling.
    assert back.BurnedInAnnotation == "YES"  # RG1 does not say it has none
    assert back.ConversionType == "WSD"
    assert list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert back.Manufacturer == "pneumonia_monai"
    assert back.ManufacturerModelName == ALGORITHM["algorithm_name"]
    assert back.SoftwareVersions == ALGORITHM["algorithm_version"]
    assert back.SeriesDescription.startswith("pneumonia_monai")
    assert "NOT FOR DIAGNOSTIC USE" in back.SeriesDescription
    assert back.ImageComments == "NOT FOR DIAGNOSTIC USE - AI heatmap (Grad-CAM)"
    assert "NOT FOR DIAGNOSTIC USE" in back.DerivationDescription
    assert ALGORITHM["algorithm_name"] in back.DerivationDescription
    assert ALGORITHM["algorithm_version"] in back.DerivationDescription
    assert len(back.SourceImageSequence) == 1
    ref = back.SourceImageSequence[0]
    assert ref.ReferencedSOPClassUID == rg1.SOPClassUID
    assert ref.ReferencedSOPInstanceUID == rg1.SOPInstanceUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"  # Source image for processing
    # Geometry and history carried over from the source.
    assert list(back.PatientOrientation) == list(rg1.PatientOrientation)
    assert back.BodyPartExamined == "CHEST"
    assert back.LossyImageCompression == "01"
    assert back.LossyImageCompressionRatio == rg1.LossyImageCompressionRatio
    assert back.LossyImageCompressionMethod == rg1.LossyImageCompressionMethod
    # The acquisition equipment of the film is credited.
    contributors = [item.Manufacturer for item in back.ContributingEquipmentSequence]
    assert rg1.Manufacturer in contributors


def test_source_facts_decide_annotation_orientation_and_lossy_flag(
    rg1: pydicom.Dataset, film_overlay: np.ndarray, tmp_path: Path
) -> None:
    source = copy.deepcopy(rg1)
    source.BurnedInAnnotation = "NO"
    source.PatientOrientation = ["AL", "F"]  # a compound orientation highdicom cannot take
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        delattr(source, keyword)
    del source.BodyPartExamined
    sc = build_heatmap_sc(source, film_overlay[:100, :60], series_number=5, instance_number=2, **ALGORITHM)
    path, back = write_and_read(sc, tmp_path)
    assert_valid(path, ACCEPTED_WARNINGS)
    assert back.BurnedInAnnotation == "NO"
    assert back.PatientOrientation in ("", None)
    assert "LossyImageCompression" not in back or back.LossyImageCompression != "01"
    assert back.BodyPartExamined == "CHEST"
    assert (back.Rows, back.Columns) == (100, 60)
    assert (back.SeriesNumber, back.InstanceNumber) == (5, 2)
    assert "BurnedInAnnotation" not in rg1  # the caller's dataset is untouched


def test_uids_derive_from_study_model_version_and_source(
    rg1: pydicom.Dataset, film_overlay: np.ndarray
) -> None:
    first = build_heatmap_sc(rg1, film_overlay, **ALGORITHM)
    again = build_heatmap_sc(rg1, film_overlay, **ALGORITHM)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (first.SOPInstanceUID, first.SeriesInstanceUID)
    assert first.SOPInstanceUID != first.SeriesInstanceUID
    assert pydicom.uid.UID(first.SOPInstanceUID).is_valid
    newer = build_heatmap_sc(
        rg1, film_overlay, algorithm_name=ALGORITHM["algorithm_name"], algorithm_version="9"
    )
    other = copy.deepcopy(rg1)
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    another = build_heatmap_sc(other, film_overlay, **ALGORITHM)
    uids = {(sc.SOPInstanceUID, sc.SeriesInstanceUID) for sc in (first, newer, another)}
    assert len(uids) == 3
    # A site operating point can change the caption's call: another object; the bundle's own, the same.
    bundle_point = build_heatmap_sc(rg1, film_overlay, **ALGORITHM, operating_point="bundle")
    sited = build_heatmap_sc(
        rg1, film_overlay, **ALGORITHM, operating_point="site a: youden on n=9 (2026-12-01)"
    )
    assert bundle_point.SOPInstanceUID == first.SOPInstanceUID
    assert sited.SOPInstanceUID not in {first.SOPInstanceUID, newer.SOPInstanceUID, another.SOPInstanceUID}
    assert not {first.SOPInstanceUID, first.SeriesInstanceUID} & {
        newer.SOPInstanceUID,
        another.SOPInstanceUID,
    }


def test_an_unreadable_patient_element_is_left_out_by_tag(
    rg1: pydicom.Dataset, film_overlay: np.ndarray, tmp_path: Path, caplog
) -> None:
    source = with_unknown_vr(rg1, "Zorro^Xylophone")
    with caplog.at_level(logging.DEBUG):
        sc = build_heatmap_sc(source, film_overlay, **ALGORITHM)
    _, back = write_and_read(sc, tmp_path)
    assert "PatientName" not in back or back.PatientName in ("", None)
    assert back.PatientID == rg1.PatientID
    messages = [r.getMessage() for r in caplog.records]
    assert any("(0010,0010)" in m and "left out" in m for m in messages)
    assert not any("Zorro" in m for m in messages)


def test_rejects_bad_inputs(rg1: pydicom.Dataset) -> None:
    good = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="float32"):
        build_heatmap_sc(rg1, good.astype(np.float32), **ALGORITHM)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        build_heatmap_sc(rg1, good[..., 0], **ALGORITHM)
    with pytest.raises(ValueError, match=r"\(8, 8, 4\)"):
        build_heatmap_sc(rg1, np.zeros((8, 8, 4), dtype=np.uint8), **ALGORITHM)
    with pytest.raises(TypeError, match="list"):
        build_heatmap_sc(rg1, [[0, 0, 0]], **ALGORITHM)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="series_number must be a positive int, got 0"):
        build_heatmap_sc(rg1, good, series_number=0, **ALGORITHM)
    with pytest.raises(ValueError, match="algorithm_name"):
        build_heatmap_sc(rg1, good, algorithm_name="x" * 65, algorithm_version="1")
    headless = copy.deepcopy(rg1)
    del headless.StudyInstanceUID
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        build_heatmap_sc(headless, good, **ALGORITHM)
