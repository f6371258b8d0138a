"""The pneumonia report built item by item as pydicom datasets, the same content tree highdicom builds.

:func:`pneumonia_monai.dicom.sr.build_pneumonia_sr_highdicom` builds the report with highdicom's TID
1500 template classes, which check every content item as it is made and then walk the whole tree
again to collect the evidence: about 45 ms for a one-image study on a CPU core, more than the
network's forward pass. The content of this report never changes shape: the same concepts, value
types and relationships for every study, only the values differ. So this module writes the items
directly (:func:`build_report`), each exactly as highdicom writes it (the same attributes, value
representations and number formats: ``DS(value, auto_format=True)`` beside an ``FD`` for a float,
a code value longer than 16 characters as Long Code Value), and the test suite pins the two builders
to each other item for item, on one- and many-image, two- and three-class reports, with and without
Image Library descriptors and intended-use notes. The arguments are validated once, by
:func:`pneumonia_monai.dicom.sr._prepare`, for both.

The document-level attributes are those of highdicom's ``ComprehensiveSR`` (Patient and Study
modules copied from the first source's IOD modules, SR Document General and SOP Common) but for its
Contributing Equipment item, which names highdicom as the library that created the instance: this
one was not created by highdicom, and has none.
"""

from __future__ import annotations

import datetime
import functools

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
)
from pydicom.valuerep import DA, DS, TM

from pneumonia_monai.dicom import sr as _sr

#: Implementation Version Name of the files written (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME = "pneumonia_monai"

_SOURCE = Code("260753009", "SCT", "Source")
_PIXELS = Code("{pixels}", "UCUM", "Pixels")
_LANGUAGE = Code("en-US", "RFC5646", "English (United States)")

# relationship types
_CONTAINS = "CONTAINS"
_HAS_OBS_CONTEXT = "HAS OBS CONTEXT"
_HAS_CONCEPT_MOD = "HAS CONCEPT MOD"
_HAS_ACQ_CONTEXT = "HAS ACQ CONTEXT"


class _C:
    """The concepts of the report, looked up in pydicom's code dictionary once (each lookup is slow)."""

    AlgorithmName = codes.DCM.AlgorithmName
    AlgorithmParameters = codes.DCM.AlgorithmParameters
    AlgorithmVersion = codes.DCM.AlgorithmVersion
    Comment = codes.DCM.Comment
    Derivation = codes.DCM.Derivation
    DeviceObserverManufacturer = codes.DCM.DeviceObserverManufacturer
    DeviceObserverModelName = codes.DCM.DeviceObserverModelName
    DeviceObserverName = codes.DCM.DeviceObserverName
    DeviceObserverUID = codes.DCM.DeviceObserverUID
    Finding = codes.DCM.Finding
    FrameOfReferenceUID = codes.DCM.FrameOfReferenceUID
    HorizontalPixelSpacing = codes.DCM.HorizontalPixelSpacing
    ImageLibrary = codes.DCM.ImageLibrary
    ImageLibraryGroup = codes.DCM.ImageLibraryGroup
    ImagingMeasurements = codes.DCM.ImagingMeasurements
    LanguageOfContentItemAndDescendants = codes.DCM.LanguageOfContentItemAndDescendants
    MeasurementGroup = codes.DCM.MeasurementGroup
    Modality = codes.DCM.Modality
    ObserverType = codes.DCM.ObserverType
    PatientOrientationColumn = codes.DCM.PatientOrientationColumn
    PatientOrientationRow = codes.DCM.PatientOrientationRow
    PixelDataColumns = codes.DCM.PixelDataColumns
    PixelDataRows = codes.DCM.PixelDataRows
    ProcedureReported = codes.DCM.ProcedureReported
    SourceOfMeasurement = codes.DCM.SourceOfMeasurement
    TrackingIdentifier = codes.DCM.TrackingIdentifier
    TrackingUniqueIdentifier = codes.DCM.TrackingUniqueIdentifier
    VerticalPixelSpacing = codes.DCM.VerticalPixelSpacing
    Maximum = codes.SCT.Maximum
    Millimeter = codes.UCUM.Millimeter
    Device = codes.cid270.Device
    ImagingMeasurementReport = codes.cid7021.ImagingMeasurementReport


def _set(ds: Dataset, tag: int, vr: str, value: object) -> None:
    ds.add(DataElement(BaseTag(tag), vr, value))


def _code(code: Code) -> Dataset:
    """A code sequence item as highdicom's ``CodedConcept`` writes it."""
    item = Dataset()
    value = str(code.value)
    if len(value) > 16:
        if value.startswith("urn") or "://" in value:
            _set(item, 0x00080120, "UR", value)  # URN Code Value
        else:
            _set(item, 0x00080119, "UC", value)  # Long Code Value
    else:
        _set(item, 0x00080100, "SH", value)  # Code Value
    _set(item, 0x00080104, "LO", str(code.meaning))  # Code Meaning
    _set(item, 0x00080102, "SH", str(code.scheme_designator))  # Coding Scheme Designator
    if code.scheme_version is not None:
        _set(item, 0x00080103, "SH", str(code.scheme_version))  # Coding Scheme Version
    return item


def _item(value_type: str, name: Code, relationship: str | None) -> Dataset:
    item = Dataset()
    _set(item, 0x0040A040, "CS", value_type)  # Value Type
    _set(item, 0x0040A043, "SQ", [_code(name)])  # Concept Name Code Sequence
    if relationship is not None:
        _set(item, 0x0040A010, "CS", relationship)  # Relationship Type
    return item


def _text(name: Code, value: str, relationship: str) -> Dataset:
    item = _item("TEXT", name, relationship)
    _set(item, 0x0040A160, "UT", str(value))  # Text Value
    return item


def _code_item(name: Code, value: Code, relationship: str) -> Dataset:
    item = _item("CODE", name, relationship)
    _set(item, 0x0040A168, "SQ", [_code(value)])  # Concept Code Sequence
    return item


def _uidref(name: Code, value: str, relationship: str) -> Dataset:
    item = _item("UIDREF", name, relationship)
    _set(item, 0x0040A124, "UI", str(value))  # UID
    return item


def _num(name: Code, value: float | int, unit: Code, relationship: str) -> Dataset:
    item = _item("NUM", name, relationship)
    measured = Dataset()
    _set(measured, 0x0040A30A, "DS", DS(value, auto_format=True))  # Numeric Value
    if isinstance(value, float):
        _set(measured, 0x0040A161, "FD", value)  # Floating Point Value
    _set(measured, 0x004008EA, "SQ", [_code(unit)])  # Measurement Units Code Sequence
    _set(item, 0x0040A300, "SQ", [measured])  # Measured Value Sequence
    return item


def _container(
    name: Code, relationship: str | None, children: list[Dataset], template_id: str | None = None
) -> Dataset:
    item = _item("CONTAINER", name, relationship)
    _set(item, 0x0040A050, "CS", "CONTINUOUS")  # Continuity Of Content
    if template_id is not None:
        _set(item, 0x0040A504, "SQ", [_template(template_id)])  # Content Template Sequence
    _set(item, 0x0040A730, "SQ", children)  # Content Sequence
    return item


def _template(template_id: str) -> Dataset:
    template = Dataset()
    _set(template, 0x00080105, "CS", "DCMR")  # Mapping Resource
    _set(template, 0x0040DB00, "CS", template_id)  # Template Identifier
    return template


def _sop_reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    reference = Dataset()
    _set(reference, 0x00081150, "UI", str(sop_class_uid))  # Referenced SOP Class UID
    _set(reference, 0x00081155, "UI", str(sop_instance_uid))  # Referenced SOP Instance UID
    return reference


def _image(name: Code, sop_class_uid: str, sop_instance_uid: str, relationship: str) -> Dataset:
    item = _item("IMAGE", name, relationship)
    _set(item, 0x00081199, "SQ", [_sop_reference(sop_class_uid, sop_instance_uid)])  # Referenced SOP Seq.
    return item


# ------------------------------------------------------------------------------------ the content


def _algorithm(report: _sr._Report) -> list[Dataset]:
    """TID 4019 Algorithm Identification: name, version, one item per parameter."""
    items = [
        _text(_C.AlgorithmName, report.algorithm_name, _HAS_CONCEPT_MOD),
        _text(_C.AlgorithmVersion, report.algorithm_version, _HAS_CONCEPT_MOD),
    ]
    items += [_text(_C.AlgorithmParameters, p, _HAS_CONCEPT_MOD) for p in report.parameters]
    return items


def _probability(report: _sr._Report, name: Code, value: float, derivation: Code | None = None) -> Dataset:
    item = _num(name, value, _sr.PROBABILITY_UNIT, _CONTAINS)
    children = [] if derivation is None else [_code_item(_C.Derivation, derivation, _HAS_CONCEPT_MOD)]
    _set(item, 0x0040A730, "SQ", children + _algorithm(report))
    return item


def _group(
    report: _sr._Report,
    identifier: str,
    measurements: list[Dataset],
    present: bool,
    source: tuple[str, str] | None,
) -> Dataset:
    """TID 1501 Measurement Group, as highdicom's ``MeasurementsAndQualitativeEvaluations`` writes it."""
    children = [
        _text(_C.TrackingIdentifier, identifier, _HAS_OBS_CONTEXT),
        _uidref(_C.TrackingUniqueIdentifier, report.tracking_uid(identifier), _HAS_OBS_CONTEXT),
        _code_item(_C.Finding, _sr.PNEUMONIA, _CONTAINS),
        *_algorithm(report),
        *measurements,
        _code_item(_sr.PNEUMONIA, _sr.PRESENT if present else _sr.ABSENT, _CONTAINS),
    ]
    if source is not None:
        children.append(_image(_C.SourceOfMeasurement, *source, _CONTAINS))
    return _container(_C.MeasurementGroup, _CONTAINS, children, template_id="1501")


@functools.lru_cache(maxsize=64)
def _coded_modality(sop_class_uid: str) -> Code:
    """The coded modality highdicom gives a SOP class (CID 29 / 32), cached: it builds a table per call."""
    from highdicom.sr.templates import _get_coded_modality

    return _get_coded_modality(sop_class_uid)


def _library_entry(ds: Dataset) -> Dataset:
    """TID 1601 entry of one image, with its TID 1602 (and, where it has them, TID 1603) descriptors."""
    entry = _sr._library_entry_source(ds)
    descriptors = [_code_item(_C.Modality, _coded_modality(str(entry.SOPClassUID)), _HAS_ACQ_CONTEXT)]
    if "FrameOfReferenceUID" in entry:
        descriptors.append(_uidref(_C.FrameOfReferenceUID, entry.FrameOfReferenceUID, _HAS_ACQ_CONTEXT))
    descriptors.append(_num(_C.PixelDataRows, entry.Rows, _PIXELS, _HAS_ACQ_CONTEXT))
    descriptors.append(_num(_C.PixelDataColumns, entry.Columns, _PIXELS, _HAS_ACQ_CONTEXT))
    modality = entry.get("Modality")
    if modality in _sr._PROJECTION_MODALITIES:
        orientation, spacing = entry.PatientOrientation, entry.ImagerPixelSpacing
        descriptors += [
            _text(_C.PatientOrientationRow, orientation[0], _HAS_ACQ_CONTEXT),
            _text(_C.PatientOrientationColumn, orientation[1], _HAS_ACQ_CONTEXT),
            _num(_C.HorizontalPixelSpacing, spacing[1], _C.Millimeter, _HAS_ACQ_CONTEXT),
            _num(_C.VerticalPixelSpacing, spacing[0], _C.Millimeter, _HAS_ACQ_CONTEXT),
        ]
    elif modality in _sr._CROSS_SECTIONAL_MODALITIES:  # pragma: no cover - chest films are projections
        raise ValueError(f"cross-sectional modality {modality} has no image library entry here")
    item = _image(_SOURCE, ds.SOPClassUID, ds.SOPInstanceUID, _CONTAINS)
    _set(item, 0x0040A730, "SQ", descriptors)
    return item


def _image_library(report: _sr._Report) -> Dataset:
    """TID 1600 Image Library: one group per coded modality and frame of reference, as highdicom groups."""
    groups: dict[tuple[str, str, str | None], list[Dataset]] = {}
    for ds in report.sources:
        modality = _coded_modality(str(ds.SOPClassUID))
        frame_of_reference = ds.get("FrameOfReferenceUID")
        key = (str(modality.value), str(modality.scheme_designator), frame_of_reference)
        groups.setdefault(key, []).append(_library_entry(ds))
    group_items = [_container(_C.ImageLibraryGroup, _CONTAINS, entries) for entries in groups.values()]
    return _container(_C.ImageLibrary, _CONTAINS, group_items)


def _content(report: _sr._Report) -> list[Dataset]:
    """The root container's Content Sequence (TID 1500)."""
    observer = [
        _code_item(_C.ObserverType, _C.Device, _HAS_OBS_CONTEXT),
        _uidref(_C.DeviceObserverUID, report.device_observer_uid, _HAS_OBS_CONTEXT),
        _text(_C.DeviceObserverName, report.algorithm_name, _HAS_OBS_CONTEXT),
        _text(_C.DeviceObserverManufacturer, report.manufacturer, _HAS_OBS_CONTEXT),
        _text(_C.DeviceObserverModelName, report.algorithm_name, _HAS_OBS_CONTEXT),
    ]
    groups = []
    for number, finding in enumerate(report.findings, start=1):
        measurements = [_probability(report, _sr.PROB_PNEUMONIA, finding.prob_pneumonia)]
        subtypes = finding.subtype_probabilities
        if subtypes is not None:
            normal, bacterial, viral = subtypes
            measurements += [
                _probability(report, _sr.PROB_NORMAL, normal),
                _probability(report, _sr.PROB_BACTERIAL, bacterial),
                _probability(report, _sr.PROB_VIRAL, viral),
            ]
        groups.append(
            _group(
                report,
                _sr.image_group_identifier(number),
                measurements,
                finding.present,
                (finding.sop_class_uid, finding.sop_instance_uid),
            )
        )
    study = _probability(report, _sr.PROB_PNEUMONIA, report.study_probability, derivation=_C.Maximum)
    groups.append(_group(report, _sr.STUDY_GROUP_IDENTIFIER, [study], report.study_present, None))
    evaluations = [_text(_sr.OUTSIDE_INTENDED_USE, note, _CONTAINS) for note in report.notes]
    evaluations.append(_text(_C.Comment, _sr.DISCLAIMER_TEXT, _CONTAINS))
    return [
        _code_item(_C.LanguageOfContentItemAndDescendants, _LANGUAGE, _HAS_CONCEPT_MOD),
        *observer,
        _code_item(_C.ProcedureReported, _sr.PLAIN_CHEST_XRAY, _HAS_CONCEPT_MOD),
        _image_library(report),
        _container(_C.ImagingMeasurements, _CONTAINS, groups),
        _container(_sr.QUALITATIVE_EVALUATIONS, _CONTAINS, evaluations),
    ]


# ------------------------------------------------------------------------------------ the document


def _evidence(report: _sr._Report) -> list[Dataset]:
    """Current Requested Procedure Evidence Sequence: the sources by series, in the order first seen."""
    series: dict[str, list[Dataset]] = {}
    for ds in report.sources:
        series.setdefault(str(ds.SeriesInstanceUID), []).append(
            _sop_reference(ds.SOPClassUID, ds.SOPInstanceUID)
        )
    series_items = []
    for series_uid, references in series.items():
        item = Dataset()
        _set(item, 0x0020000E, "UI", series_uid)  # Series Instance UID
        _set(item, 0x00081199, "SQ", references)  # Referenced SOP Sequence
        series_items.append(item)
    study = Dataset()
    _set(study, 0x0020000D, "UI", str(report.sources[0].StudyInstanceUID))  # Study Instance UID
    _set(study, 0x00081115, "SQ", series_items)  # Referenced Series Sequence
    return [study]


def _coding_scheme(report: _sr._Report) -> Dataset:
    item = Dataset()
    _set(item, 0x00080102, "SH", _sr.PRIVATE_SCHEME)  # Coding Scheme Designator
    _set(item, 0x00080115, "ST", _sr.PRIVATE_SCHEME_NAME)  # Coding Scheme Name
    _set(item, 0x00080116, "ST", report.manufacturer)  # Coding Scheme Responsible Organization
    return item


def build_report(report: _sr._Report) -> Dataset:
    """Build the validated ``report`` (see :func:`pneumonia_monai.dicom.sr.build_pneumonia_sr`).

    Returns:
        The Comprehensive SR, with file meta information, ready for
        :func:`~pneumonia_monai.dicom.writer.write_dataset_atomic`.
    """
    evidence = _sr._evidence_header(report.sources[0])
    sr = Dataset()
    sr.preamble = b"\0" * 128
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    meta.MediaStorageSOPInstanceUID = UID(report.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    sr.file_meta = meta

    # Patient and Study modules: the Type 2 attributes, then what the source's IOD modules hold
    referring = evidence.get("ReferringPhysicianName")
    _set(sr, 0x00080090, "PN", referring)  # Referring Physician's Name (Type 2)
    for keyword in _sr._patient_study_keywords(str(evidence.SOPClassUID)):
        if keyword in evidence:
            sr.add(evidence[keyword])
    if "SpecificCharacterSet" in evidence:
        _set(sr, 0x00080005, "CS", evidence.SpecificCharacterSet)  # Specific Character Set
    now = datetime.datetime.now()
    date, time = DA(now.date()), TM(now.time())
    _set(sr, 0x00080012, "DA", date)  # Instance Creation Date
    _set(sr, 0x00080013, "TM", time)  # Instance Creation Time
    _set(sr, 0x00080016, "UI", ComprehensiveSRStorage)  # SOP Class UID
    _set(sr, 0x00080018, "UI", report.sop_uid)  # SOP Instance UID
    _set(sr, 0x00080023, "DA", date)  # Content Date
    _set(sr, 0x00080033, "TM", time)  # Content Time
    _set(sr, 0x00080060, "CS", "SR")  # Modality
    _set(sr, 0x00080070, "LO", report.manufacturer)  # Manufacturer
    _set(sr, 0x00080110, "SQ", [_coding_scheme(report)])  # Coding Scheme Identification Sequence
    _set(sr, 0x0008103E, "LO", _sr.SR_SERIES_DESCRIPTION)  # Series Description
    _set(sr, 0x00081090, "LO", report.algorithm_name)  # Manufacturer's Model Name
    _set(sr, 0x00081111, "SQ", [])  # Referenced Performed Procedure Step Sequence
    _set(sr, 0x00181020, "LO", report.algorithm_version)  # Software Versions
    _set(sr, 0x0020000E, "UI", report.series_uid)  # Series Instance UID
    _set(sr, 0x00200011, "IS", report.series_number)  # Series Number
    _set(sr, 0x00200013, "IS", report.instance_number)  # Instance Number
    _set(sr, 0x0040A372, "SQ", [])  # Performed Procedure Code Sequence
    _set(sr, 0x0040A375, "SQ", _evidence(report))  # Current Requested Procedure Evidence Sequence
    _set(sr, 0x0040A491, "CS", "PARTIAL")  # Completion Flag
    _set(sr, 0x0040A493, "CS", "UNVERIFIED")  # Verification Flag
    _set(sr, 0x0040A496, "CS", "PRELIMINARY")  # Preliminary Flag
    # the root content item (TID 1500), at the top level of the document
    _set(sr, 0x0040A040, "CS", "CONTAINER")  # Value Type
    _set(sr, 0x0040A043, "SQ", [_code(_C.ImagingMeasurementReport)])  # Concept Name Code Seq.
    _set(sr, 0x0040A050, "CS", "CONTINUOUS")  # Continuity Of Content
    _set(sr, 0x0040A504, "SQ", [_template("1500")])  # Content Template Sequence
    _set(sr, 0x0040A730, "SQ", _content(report))  # Content Sequence
    _mark_encoding(sr)
    return sr


def _mark_encoding(ds: Dataset) -> None:
    """Record on ``ds`` and its items that they hold Explicit VR Little Endian data in their character set.

    They were built so (every VR explicit, none ambiguous), so pydicom's writer need not walk each item
    again to correct ambiguous VRs before writing it (it does so for a dataset whose recorded encoding
    differs from the one it is written in). An item without its own Specific Character Set reports
    pydicom's default one; the writer encodes it with its document's, whatever is recorded here.
    """
    own = ds.get("SpecificCharacterSet")
    ds.set_original_encoding(False, True, convert_encodings(own) if own else default_encoding)
    for element in ds.elements():
        if element.VR == "SQ" and isinstance(element.value, DicomSequence):
            for item in element.value:
                _mark_encoding(item)
