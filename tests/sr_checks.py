"""Checks of the pneumonia SRs the tests write: dciodvfy with the SR's accepted warnings, and what IHE
AIR and OHIF v3 need of a TID 1500 report, read back with highdicom."""

from __future__ import annotations

import re
from pathlib import Path

import dicom_checks
import highdicom as hd
import pydicom
from highdicom.sr.utils import find_content_items
from pydicom.sr.codedict import codes

from pneumonia_monai.dicom.sr import ABSENT, PNEUMONIA, PRESENT, PROB_PNEUMONIA

ALGORITHM = {"algorithm_name": "densenet121-pneumonia", "algorithm_version": "1.2.3"}


#: dciodvfy warnings accepted, each with its reason:
#: - the private coding scheme designator is, by definition, not among DICOM's defined terms (it is
#:   declared in the Coding Scheme Identification Sequence);
#: - RG1's Referring Physician's Name "ward" (copied from the source, as the Study module must be) is an
#:   old Person Name form.
ACCEPTED_WARNINGS = (
    re.compile(
        r"Unrecognized defined term <99PNEUMONIA> for value 1 of attribute <Coding Scheme Designator>"
    ),
    re.compile(r"\(0x0008,0x0090\) PN Referring Physician's Name .* Retired Person Name form"),
)


def assert_valid(path: Path, also_accepted: tuple[re.Pattern, ...] = ()) -> None:
    """dciodvfy finds no error, and no warning but the SR's accepted ones and ``also_accepted``."""
    dicom_checks.assert_valid(path, ACCEPTED_WARNINGS + also_accepted)


def presence(group) -> hd.sr.CodedConcept:
    evaluations = group.get_qualitative_evaluations(name=PNEUMONIA)
    assert len(evaluations) == 1
    return evaluations[0].value


def probability(group, name=PROB_PNEUMONIA) -> float:
    measurements = group.get_measurements(name=name)
    assert len(measurements) == 1
    assert measurements[0].unit == codes.UCUM.NoUnits
    return measurements[0].value


def text_values(item: pydicom.Dataset, name) -> list[str]:
    return [i.TextValue for i in find_content_items(item, name=name)]


def library_entries(report: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    """The Image Library's IMAGE items by referenced SOP Instance UID (exactly one library)."""
    libraries = find_content_items(report, name=codes.DCM.ImageLibrary, recursive=True)
    assert len(libraries) == 1
    entries = find_content_items(libraries[0], value_type="IMAGE", recursive=True)
    return {e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID: e for e in entries}


def num_value(item: pydicom.Dataset, name) -> float:
    (num,) = find_content_items(item, name=name)
    return float(num.MeasuredValueSequence[0].NumericValue)


def assert_air_displayable(
    report: hd.sr.ComprehensiveSR, sources: list[pydicom.Dataset], algorithm: dict[str, str] = ALGORITHM
) -> None:
    """What IHE AIR and OHIF v3 need of a TID 1500 report, checked on the report read back by highdicom."""
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # an Image Library that lists every source, with the TID 1602 descriptors
    entries = library_entries(report)
    assert set(entries) == {str(ds.SOPInstanceUID) for ds in sources}
    for ds in sources:
        entry = entries[str(ds.SOPInstanceUID)]
        assert entry.ReferencedSOPSequence[0].ReferencedSOPClassUID == ds.SOPClassUID
        assert find_content_items(entry, name=codes.DCM.Modality)
        assert num_value(entry, codes.DCM.PixelDataRows) == ds.Rows
        assert num_value(entry, codes.DCM.PixelDataColumns) == ds.Columns
    groups = report.content.get_image_measurement_groups()
    assert len(groups) == len(sources) + 1
    uids = []
    for group in groups:
        # a Tracking Identifier and a Tracking Unique Identifier in every group
        assert group.tracking_identifier and group.tracking_identifier.startswith("pneumonia ")
        assert pydicom.uid.UID(group.tracking_uid).is_valid
        uids.append(group.tracking_uid)
        # the qualitative finding, and the probability as a NUM beside it
        assert group.finding_type == PNEUMONIA
        assert presence(group) in (PRESENT, ABSENT)
        assert 0.0 <= probability(group) <= 1.0
        # the algorithm, on the group and on its measurement
        assert text_values(group[0], codes.DCM.AlgorithmName) == [algorithm["algorithm_name"]]
        assert text_values(group[0], codes.DCM.AlgorithmVersion) == [algorithm["algorithm_version"]]
        (num,) = find_content_items(group[0], name=PROB_PNEUMONIA)
        assert text_values(num, codes.DCM.AlgorithmName) == [algorithm["algorithm_name"]]
    assert len(set(uids)) == len(uids)
    # every code in a Code Value (readers such as OHIF read no Long Code Value)
    assert all("CodeValue" in code for code in codes_of(report)), [str(c) for c in codes_of(report)]


def codes_of(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    """Every code sequence item under ``ds``."""
    found = []
    for element in ds:
        if element.VR != "SQ":
            continue
        for item in element.value:
            if "CodeMeaning" in item:
                found.append(item)
            found += codes_of(item)
    return found
