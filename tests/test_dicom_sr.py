"""The TID 1500 pneumonia report of :mod:`pneumonia_monai.dicom.sr`, read back and validated."""

from __future__ import annotations

import copy
import io
import logging
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import with_unknown_vr
from highdicom.sr.utils import find_content_items
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import (
    ComprehensiveSRStorage,
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sr_checks import (
    ALGORITHM,
    assert_air_displayable,
    assert_valid,
    library_entries,
    num_value,
    presence,
    probability,
    text_values,
)

from pneumonia_monai.dicom.sr import (
    ABSENT,
    OUTSIDE_INTENDED_USE,
    PNEUMONIA,
    PRESENT,
    PRIVATE_SCHEME,
    PROB_BACTERIAL,
    PROB_NORMAL,
    PROB_PNEUMONIA,
    PROB_VIRAL,
    QUALITATIVE_EVALUATIONS,
    ImageFinding,
    build_pneumonia_sr,
    build_pneumonia_sr_highdicom,
    default_device_observer_uid,
)
from pneumonia_monai.dicom.writer import write_dataset_atomic


@pytest.fixture(scope="module")
def rg1() -> pydicom.Dataset:
    """pydicom-data's RG1: a real 15-bit MONOCHROME1 chest CR (header only)."""
    return pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)


def second_instance(source: pydicom.Dataset, *, dx: bool = False) -> pydicom.Dataset:
    """A synthetic second image of the same study: new series and instance, optionally a DX image
    with the projection descriptors highdicom's image library needs."""
    ds = copy.deepcopy(source)
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.ViewPosition = "AP"
    if dx:
        ds.SOPClassUID = DigitalXRayImageStorageForPresentation
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.Modality = "DX"
        ds.PatientOrientation = ["R", "F"]
        ds.ImagerPixelSpacing = [0.15, 0.15]
    return ds


def finding(ds: pydicom.Dataset, prob: float, present: bool, **extra: object) -> ImageFinding:
    return ImageFinding(str(ds.SOPInstanceUID), str(ds.SOPClassUID), prob, present, **extra)


def write_and_read(sr: pydicom.Dataset, tmp_path: Path) -> tuple[Path, hd.sr.ComprehensiveSR]:
    path = tmp_path / "report.dcm"
    write_dataset_atomic(sr, path)
    return path, hd.sr.srread(path)


def groups_by_image(report: hd.sr.ComprehensiveSR) -> tuple[dict[str, object], object]:
    groups = report.content.get_image_measurement_groups()
    per_image = {g.source_images[0].referenced_sop_instance_uid: g for g in groups if g.source_images}
    study = [g for g in groups if not g.source_images]
    assert len(study) == 1
    return per_image, study[0]


def test_report_of_two_images_round_trip(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    other = second_instance(rg1)
    sources = [rg1, other]
    sr = build_pneumonia_sr(
        sources,
        [finding(other, 0.2, False), finding(rg1, 0.87, True)],  # any order
        threshold=0.5,
        **ALGORITHM,
    )
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)

    # Identity: same study and patient, new series and instance.
    assert report.SOPClassUID == ComprehensiveSRStorage
    assert report.Modality == "SR"
    assert report.StudyInstanceUID == rg1.StudyInstanceUID
    source_uids = {str(ds.SOPInstanceUID) for ds in sources} | {str(ds.SeriesInstanceUID) for ds in sources}
    assert report.SeriesInstanceUID not in source_uids | {rg1.StudyInstanceUID}
    assert report.SOPInstanceUID not in source_uids | {rg1.StudyInstanceUID, report.SeriesInstanceUID}
    assert report.SeriesNumber == 990
    assert report.InstanceNumber == 1
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyID",
        "AccessionNumber",
    ):
        assert report[keyword].value == rg1[keyword].value, keyword

    # Status and labelling.
    assert report.CompletionFlag == "PARTIAL"
    assert report.VerificationFlag == "UNVERIFIED"
    assert report.PreliminaryFlag == "PRELIMINARY"
    assert report.SeriesDescription.startswith("pneumonia_monai")
    assert "NOT FOR DIAGNOSTIC USE" in report.SeriesDescription
    assert report.Manufacturer == "pneumonia_monai"
    assert report.ManufacturerModelName == ALGORITHM["algorithm_name"]
    assert report.SoftwareVersions == ALGORITHM["algorithm_version"]
    comments = [c.TextValue for c in find_content_items(report, name=codes.DCM.Comment, recursive=True)]
    assert any(t.startswith("NOT FOR DIAGNOSTIC USE") for t in comments)
    schemes = [item.CodingSchemeDesignator for item in report.CodingSchemeIdentificationSequence]
    assert PRIVATE_SCHEME in schemes

    # Every source is referenced, by a measurement group and as evidence.
    evidence = {(sop, cls) for _, _, sop, cls in report.get_evidence()}
    assert evidence == {(str(ds.SOPInstanceUID), str(ds.SOPClassUID)) for ds in sources}
    per_image, study = groups_by_image(report)
    assert set(per_image) == {str(ds.SOPInstanceUID) for ds in sources}
    for ds in sources:
        assert per_image[str(ds.SOPInstanceUID)].source_images[0].referenced_sop_class_uid == ds.SOPClassUID

    # Findings: per image, then the study = max probability, present if any image is.
    positive, negative = per_image[str(rg1.SOPInstanceUID)], per_image[str(other.SOPInstanceUID)]
    for group in (positive, negative, study):
        assert group.finding_type == PNEUMONIA
    assert presence(positive) == PRESENT
    assert presence(negative) == ABSENT
    assert probability(positive) == pytest.approx(0.87)
    assert probability(negative) == pytest.approx(0.2)
    assert presence(study) == PRESENT
    assert probability(study) == pytest.approx(0.87)
    assert study.get_measurements(name=PROB_PNEUMONIA)[0].derivation == codes.SCT.Maximum
    assert positive.get_measurements(name=PROB_PNEUMONIA)[0].derivation is None

    # Algorithm identification, on each group and each measurement.
    for group in (positive, negative, study):
        assert text_values(group[0], codes.DCM.AlgorithmName) == [ALGORITHM["algorithm_name"]]
        assert text_values(group[0], codes.DCM.AlgorithmVersion) == [ALGORITHM["algorithm_version"]]
        assert text_values(group[0], codes.DCM.AlgorithmParameters) == [
            "decision threshold on the probability of pneumonia=0.5"
        ]
        num = find_content_items(group[0], name=PROB_PNEUMONIA)[0]
        assert text_values(num, codes.DCM.AlgorithmName) == [ALGORITHM["algorithm_name"]]
        assert text_values(num, codes.DCM.AlgorithmVersion) == [ALGORITHM["algorithm_version"]]

    # Observer: the algorithm, as a device.
    observers = report.content.get_observer_contexts()
    assert len(observers) == 1
    assert observers[0].observer_type == codes.cid270.Device
    device = observers[0].observer_identifying_attributes
    assert device.uid == default_device_observer_uid("pneumonia_monai", **ALGORITHM)
    assert device.name == ALGORITHM["algorithm_name"]
    assert device.model_name == ALGORITHM["algorithm_name"]
    assert device.manufacturer_name == "pneumonia_monai"


def test_negative_report_is_valid(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    observer_uid = generate_uid()
    sr = build_pneumonia_sr(
        [rg1],
        [finding(rg1, 0.03, False)],
        threshold=0.5,
        series_number=7,
        instance_number=3,
        device_observer_uid=observer_uid,
        **ALGORITHM,
    )
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)
    per_image, study = groups_by_image(report)
    assert presence(per_image[str(rg1.SOPInstanceUID)]) == ABSENT
    assert presence(study) == ABSENT
    assert probability(study) == pytest.approx(0.03)
    assert report.SeriesNumber == 7
    assert report.InstanceNumber == 3
    assert report.content.get_observer_contexts()[0].observer_identifying_attributes.uid == observer_uid
    # No present code anywhere in a negative report.
    codes_found = [
        item.ConceptCodeSequence[0].CodeValue
        for item in find_content_items(report, recursive=True)
        if "ConceptCodeSequence" in item
    ]
    assert PRESENT.value not in codes_found
    assert ABSENT.value in codes_found


def test_three_class_probabilities(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    sr = build_pneumonia_sr(
        [rg1],
        [finding(rg1, 0.7, True, prob_normal=0.3, prob_bacterial=0.5, prob_viral=0.2)],
        threshold=0.4,
        **ALGORITHM,
    )
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)
    per_image, study = groups_by_image(report)
    group = per_image[str(rg1.SOPInstanceUID)]
    assert probability(group) == pytest.approx(0.7)
    assert probability(group, PROB_NORMAL) == pytest.approx(0.3)
    assert probability(group, PROB_BACTERIAL) == pytest.approx(0.5)
    assert probability(group, PROB_VIRAL) == pytest.approx(0.2)
    assert study.get_measurements(name=PROB_NORMAL) == []


def test_image_library_always_also_without_imager_pixel_spacing(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    first, second = second_instance(rg1, dx=True), second_instance(rg1, dx=True)
    sr = build_pneumonia_sr(
        [first, second], [finding(first, 0.6, True), finding(second, 0.4, False)], threshold=0.5, **ALGORITHM
    )
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)
    assert_air_displayable(report, [first, second])
    entry = library_entries(report)[first.SOPInstanceUID]  # described in full (TID 1603)
    assert num_value(entry, codes.DCM.HorizontalPixelSpacing) == pytest.approx(0.15)
    assert text_values(entry, codes.DCM.PatientOrientationRow) == ["R"]

    # RG1 has no Imager Pixel Spacing: it is in the library all the same, by its TID 1602 descriptors.
    assert "ImagerPixelSpacing" not in rg1
    sr = build_pneumonia_sr(
        [rg1, first], [finding(rg1, 0.1, False), finding(first, 0.2, False)], threshold=0.5, **ALGORITHM
    )
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)
    assert_air_displayable(report, [rg1, first])
    entries = library_entries(report)
    assert find_content_items(entries[rg1.SOPInstanceUID], name=codes.DCM.HorizontalPixelSpacing) == []
    assert find_content_items(entries[first.SOPInstanceUID], name=codes.DCM.HorizontalPixelSpacing)


def siim_like_header(source: pydicom.Dataset) -> pydicom.Dataset:
    """A Secondary Capture chest film like SIIM-ACR's: Modality CR, chest PA, age 62, no pixel spacing."""
    ds = second_instance(source)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.PatientAge = "062Y"
    ds.ViewPosition = "PA"
    return ds


def test_outside_intended_use_note_and_air_content(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    siim = siim_like_header(rg1)
    child = second_instance(rg1, dx=True)
    sr = build_pneumonia_sr(
        [child, siim],
        [
            finding(child, 0.2, False, intended_use="yes"),
            finding(siim, 0.9, True, intended_use="no"),
        ],
        threshold=0.5,
        intended_use="patient age 1 to 5 years",
        **ALGORITHM,
    )
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)
    assert_air_displayable(report, [child, siim])
    (evaluations,) = find_content_items(report, name=QUALITATIVE_EVALUATIONS)
    notes = text_values(evaluations, OUTSIDE_INTENDED_USE)
    assert notes == [
        "pneumonia image 2: outside the intended use of the model (patient age 1 to 5 years); the result "
        "is not validated for this patient."
    ]
    per_image, _ = groups_by_image(report)
    assert per_image[str(siim.SOPInstanceUID)].tracking_identifier == "pneumonia image 2"
    assert not any("062" in note for note in notes)  # the age itself is not in the note
    # a report of films inside (or of unknown) intended use has no note
    sr = build_pneumonia_sr([child], [finding(child, 0.2, False)], threshold=0.5, **ALGORITHM)
    assert find_content_items(sr, name=OUTSIDE_INTENDED_USE, recursive=True) == []
    with pytest.raises(ValueError, match="intended_use must be one of"):
        finding(child, 0.2, False, intended_use="maybe")


def test_missing_type2_attributes_leave_them_empty(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    sparse = copy.deepcopy(rg1)
    for keyword in ("PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        delattr(sparse, keyword)
    sr = build_pneumonia_sr([sparse], [finding(sparse, 0.5, True)], threshold=0.5, **ALGORITHM)
    path, report = write_and_read(sr, tmp_path)
    # An empty Study ID is valid (Type 2) but DICOMDIR builders would like one: the source had none.
    assert_valid(path, (re.compile(r"needed to build DICOMDIR - Study ID"),))
    assert report.PatientBirthDate == ""
    assert report.StudyID == ""
    assert report.PatientName == rg1.PatientName
    assert "PatientBirthDate" not in sparse  # the caller's dataset is not modified


def test_logs_carry_no_patient_identifiers(rg1: pydicom.Dataset, caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="pneumonia_monai"):
        build_pneumonia_sr([rg1], [finding(rg1, 0.9, True)], threshold=0.5, **ALGORITHM)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pneumonia_monai")]
    assert ours  # the build is logged ...
    for message in ours:  # ... without PHI
        for phi in (str(rg1.PatientName), rg1.PatientID, rg1.PatientBirthDate, rg1.OtherPatientIDs):
            assert phi not in message


def test_an_unknown_vr_in_the_patient_module_is_left_out_not_fatal(
    rg1: pydicom.Dataset, tmp_path: Path, caplog
) -> None:
    source = with_unknown_vr(rg1, "Zorro^Xylophone")
    with caplog.at_level(logging.DEBUG):
        sr = build_pneumonia_sr([source], [finding(source, 0.7, True)], threshold=0.5, **ALGORITHM)
    path, report = write_and_read(sr, tmp_path)
    assert_valid(path)
    assert report.PatientName == ""  # Type 2: present, empty
    assert report.PatientID == rg1.PatientID
    messages = [r.getMessage() for r in caplog.records]
    assert any("(0010,0010)" in m and "PatientName" in m and "left out" in m for m in messages)
    assert not any("Zorro" in m for m in messages)


def test_an_invalid_birth_date_is_left_empty_and_never_logged(
    rg1: pydicom.Dataset, tmp_path: Path, caplog
) -> None:
    ds = copy.deepcopy(rg1)
    ds.PatientBirthDate = "1901-02-03"  # not a DA (YYYYMMDD)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    source = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    with caplog.at_level(logging.DEBUG, logger="pneumonia_monai"):
        sr = build_pneumonia_sr([source], [finding(source, 0.7, True)], threshold=0.5, **ALGORITHM)
    _, report = write_and_read(sr, tmp_path)
    assert report.PatientBirthDate == ""
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pneumonia_monai")]
    assert any("(0010,0030)" in m for m in ours)
    assert not any("1901" in m for m in ours)


def test_sr_uids_derive_from_study_model_version_and_sorted_sources(rg1: pydicom.Dataset) -> None:
    other = second_instance(rg1)
    findings = [finding(rg1, 0.3, False), finding(other, 0.8, True)]
    first = build_pneumonia_sr([rg1, other], findings, threshold=0.5, **ALGORITHM)
    again = build_pneumonia_sr([other, rg1], findings[::-1], threshold=0.5, **ALGORITHM)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (first.SOPInstanceUID, first.SeriesInstanceUID)
    assert first.SOPInstanceUID != first.SeriesInstanceUID
    tracking = sorted(
        str(uid) for uid in find_content_items(first, name=codes.DCM.TrackingUniqueIdentifier, recursive=True)
    )
    assert tracking == sorted(
        str(uid) for uid in find_content_items(again, name=codes.DCM.TrackingUniqueIdentifier, recursive=True)
    )
    only_one = build_pneumonia_sr([rg1], findings[:1], threshold=0.5, **ALGORITHM)
    newer = build_pneumonia_sr(
        [rg1, other],
        findings,
        threshold=0.5,
        algorithm_name=ALGORITHM["algorithm_name"],
        algorithm_version="2.0",
    )
    uids = {first.SOPInstanceUID, only_one.SOPInstanceUID, newer.SOPInstanceUID}
    series = {first.SeriesInstanceUID, only_one.SeriesInstanceUID, newer.SeriesInstanceUID}
    assert len(uids) == 3 and len(series) == 3
    assert all(pydicom.uid.UID(uid).is_valid for uid in uids | series)


def test_default_device_observer_uid_is_stable() -> None:
    uid = default_device_observer_uid("pneumonia_monai", "net", "1.0")
    assert pydicom.uid.UID(uid).is_valid
    assert uid == default_device_observer_uid("pneumonia_monai", "net", "1.0")
    assert uid != default_device_observer_uid("pneumonia_monai", "net", "1.1")


def test_validation_errors_name_the_bad_value(rg1: pydicom.Dataset) -> None:
    other = second_instance(rg1)
    good = finding(rg1, 0.5, True)

    with pytest.raises(ValueError, match="empty"):
        build_pneumonia_sr([], [good], threshold=0.5, **ALGORITHM)

    foreign = second_instance(rg1)
    foreign.StudyInstanceUID = generate_uid()
    with pytest.raises(ValueError, match=re.escape(str(foreign.StudyInstanceUID))) as info:
        build_pneumonia_sr([rg1, foreign], [good, finding(foreign, 0.1, False)], threshold=0.5, **ALGORITHM)
    assert str(rg1.StudyInstanceUID) in str(info.value)

    with pytest.raises(ValueError, match=re.escape(str(other.SOPInstanceUID))):
        build_pneumonia_sr([rg1], [good, finding(other, 0.1, False)], threshold=0.5, **ALGORITHM)

    with pytest.raises(ValueError, match=re.escape(str(other.SOPInstanceUID))):
        build_pneumonia_sr([rg1, other], [good], threshold=0.5, **ALGORITHM)  # an image without finding

    with pytest.raises(ValueError, match="more than one finding"):
        build_pneumonia_sr([rg1], [good, good], threshold=0.5, **ALGORITHM)

    with pytest.raises(ValueError, match="more than once"):
        build_pneumonia_sr([rg1, rg1], [good], threshold=0.5, **ALGORITHM)

    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\], got 1\.5"):
        build_pneumonia_sr([rg1], [good], threshold=1.5, **ALGORITHM)

    with pytest.raises(ValueError, match=re.escape("1.2.840.10008.5.1.4.1.1.7")):
        build_pneumonia_sr(
            [rg1],
            [ImageFinding(rg1.SOPInstanceUID, "1.2.840.10008.5.1.4.1.1.7", 0.5, True)],
            threshold=0.5,
            **ALGORITHM,
        )

    with pytest.raises(ValueError, match="algorithm_version"):
        build_pneumonia_sr([rg1], [good], threshold=0.5, algorithm_name="net", algorithm_version="")

    with pytest.raises(ValueError, match="device_observer_uid"):
        build_pneumonia_sr([rg1], [good], threshold=0.5, device_observer_uid="not a uid", **ALGORITHM)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prob_pneumonia": 1.2}, r"prob_pneumonia must be a number in \[0, 1\], got 1\.2"),
        ({"prob_pneumonia": float("nan")}, r"prob_pneumonia must be a number in \[0, 1\], got nan"),
        ({"prob_pneumonia": -0.1}, r"got -0\.1"),
        ({"sop_instance_uid": "1.2.abc"}, "1.2.abc"),
        ({"prob_normal": 0.5}, "missing"),
        ({"prob_normal": 0.2, "prob_bacterial": 0.2, "prob_viral": 0.2}, "must be 1, got 0.6"),
        ({"prob_pneumonia": 0.9, "prob_normal": 0.5, "prob_bacterial": 0.3, "prob_viral": 0.2}, "0.9"),
        (
            {"prob_normal": 1.5, "prob_bacterial": 0.0, "prob_viral": 0.0},
            r"prob_normal must be a number in \[0, 1\], got 1\.5",
        ),
    ],
)
def test_image_finding_validation(kwargs: dict, message: str) -> None:
    values = {
        "sop_instance_uid": "1.2.3.4",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1",
        "prob_pneumonia": 0.5,
        "present": True,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        ImageFinding(**values)


def test_image_finding_accepts_numpy_scalars(rg1: pydicom.Dataset) -> None:
    """Model outputs are numpy scalars: they are stored as builtin floats and bools."""
    result = ImageFinding(rg1.SOPInstanceUID, rg1.SOPClassUID, np.float32(0.25), np.bool_(False))
    assert type(result.prob_pneumonia) is float
    assert result.prob_pneumonia == pytest.approx(0.25)
    assert result.present is False
    assert type(result.sop_instance_uid) is str
    sr = build_pneumonia_sr([rg1], [result], threshold=np.float64(0.5), **ALGORITHM)
    _, study = groups_by_image(hd.sr.ComprehensiveSR.from_dataset(sr))
    assert probability(study) == pytest.approx(0.25)


def test_image_finding_present_must_be_bool() -> None:
    with pytest.raises(TypeError, match="present"):
        ImageFinding("1.2.3.4", "1.2.840.10008.5.1.4.1.1.1", 0.5, 1)  # type: ignore[arg-type]


def test_write_dataset_atomic(rg1: pydicom.Dataset, tmp_path: Path) -> None:
    sr = build_pneumonia_sr([rg1], [finding(rg1, 0.5, True)], threshold=0.5, **ALGORITHM)
    path = tmp_path / "out.dcm"
    path.write_bytes(b"stale")
    write_dataset_atomic(sr, path)
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    assert pydicom.dcmread(path).SOPInstanceUID == sr.SOPInstanceUID
    assert [p.name for p in tmp_path.iterdir()] == ["out.dcm"]
    with pytest.raises(TypeError, match="Dataset"):
        write_dataset_atomic({"not": "a dataset"}, path)  # type: ignore[arg-type]
    assert pydicom.dcmread(path).SOPInstanceUID == sr.SOPInstanceUID


#: What may differ between the report built item by item and highdicom's: the creation date and time,
#: and highdicom's Contributing Equipment item (it names highdicom as the library that made the file).
BUILT_AT = ("00080012", "00080013", "00080023", "00080033", "0018A001")


def comparable(sr: pydicom.Dataset) -> dict:
    data = sr.to_json_dict()
    for tag in BUILT_AT:
        data.pop(tag, None)
    return data


def report_cases(rg1: pydicom.Dataset) -> dict[str, tuple[list[pydicom.Dataset], list[ImageFinding], dict]]:
    dx, other_dx = second_instance(rg1, dx=True), second_instance(rg1, dx=True)
    siim = siim_like_header(rg1)
    same_series = second_instance(rg1)
    same_series.SeriesInstanceUID = rg1.SeriesInstanceUID
    framed = second_instance(rg1, dx=True)
    framed.FrameOfReferenceUID = generate_uid()
    sparse = copy.deepcopy(rg1)
    for keyword in ("PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        delattr(sparse, keyword)
    utf8 = copy.deepcopy(rg1)
    utf8.SpecificCharacterSet = "ISO_IR 192"
    utf8.PatientName = "Müller^Jürgen=山田^太郎"
    return {
        "one image without pixel spacing": ([rg1], [finding(rg1, 0.7, True)], {}),
        "two projection images": (
            [dx, other_dx],
            [finding(dx, 0.2, False), finding(other_dx, 0.95, True)],
            {"series_number": 7, "instance_number": 3},
        ),
        "mixed library, one series twice, a frame of reference": (
            [rg1, same_series, framed],
            [finding(rg1, 0.1, False), finding(same_series, 0.5, True), finding(framed, 0.3, False)],
            {"device_observer_uid": generate_uid()},
        ),
        "three classes": (
            [rg1],
            [finding(rg1, 0.7, True, prob_normal=0.3, prob_bacterial=0.5, prob_viral=0.2)],
            {"threshold": 0.4},
        ),
        "outside intended use, site operating point": (
            [siim, dx],
            [finding(siim, 0.9, True, intended_use="no"), finding(dx, 0.1, False, intended_use="yes")],
            {"intended_use": "patient age 1 to 5 years", "operating_point": "site-a"},
        ),
        "Type 2 attributes missing": ([sparse], [finding(sparse, 0.5, True)], {}),
        "UTF-8 names": (
            [utf8],
            [finding(utf8, 0.6, True)],
            {"algorithm_name": "réseau-pneumonie", "algorithm_version": "1.2.3"},
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "one image without pixel spacing",
        "two projection images",
        "mixed library, one series twice, a frame of reference",
        "three classes",
        "outside intended use, site operating point",
        "Type 2 attributes missing",
        "UTF-8 names",
    ],
)
def test_report_built_item_by_item_equals_highdicoms(rg1: pydicom.Dataset, tmp_path: Path, case: str) -> None:
    sources, findings, extra = report_cases(rg1)[case]
    arguments = {"threshold": 0.5, **ALGORITHM, **extra}
    fast = build_pneumonia_sr(sources, findings, **arguments)
    reference = build_pneumonia_sr_highdicom(sources, findings, **arguments)
    assert type(fast) is pydicom.Dataset and isinstance(reference, hd.sr.ComprehensiveSR)
    # the whole document, content tree included, item for item and value for value
    assert comparable(fast) == comparable(reference)
    assert fast.ContentSequence == reference.ContentSequence
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID"):
        assert fast.file_meta[keyword].value == reference.file_meta[keyword].value
    assert "ContributingEquipmentSequence" not in fast
    # and both are valid DICOM, and read back by highdicom the same
    fast_path, fast_read = write_and_read(fast, tmp_path)
    also = (
        (re.compile(r"needed to build DICOMDIR - Study ID"),) if case == "Type 2 attributes missing" else ()
    )
    assert_valid(fast_path, also)
    reference_path = tmp_path / "reference.dcm"
    write_dataset_atomic(reference, reference_path)
    assert_valid(reference_path, also)
    assert comparable(fast_read) == comparable(hd.sr.srread(reference_path))
