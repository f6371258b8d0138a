"""The classifier's result for one study as a DICOM TID 1500 Measurement Report, built with highdicom.

SOP class: **Comprehensive SR**. TID 1500 may be carried by Enhanced, Comprehensive or Comprehensive 3D
SR; highdicom's own examples use Comprehensive 3D SR because their measurements carry 3-D coordinates
(SCOORD3D). This report has no spatial coordinates at all, so the 3-D class brings nothing but a
narrower set of readers: Comprehensive SR is the most widely supported class that carries TID 1500
(the Orthanc Stone Web Viewer, for one, read TID 1500 from Comprehensive SR only until 2025), and it
allows everything used here (by-value IMAGE references, NUM, CODE, TEXT, UIDREF).

Content tree (``>`` = child)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")        TID 1500
    > Language, Observer context: Observer Type = Device (TID 1004: UID, name, manufacturer, model)
    > Procedure reported = (399208008, SCT, "Plain X-ray of chest")
    > Image Library (TID 1600): every source image, its modality, rows and columns (TID 1602), plus
      orientation and pixel spacing (TID 1603) where the image has both (see below)
    > CONTAINER (126010, DCM, "Imaging Measurements")
      > Measurement Group (TID 1501), one per image, then one for the study:
        > Tracking Identifier + Tracking Unique Identifier
        > Finding = (233604007, SCT, "Pneumonia")
        > Algorithm Name / Version / Parameters (TID 4019; the decision threshold is a parameter)
        > NUM (PNEUMONIA-PROB, 99PNEUMONIA, "Probability of pneumonia") in UCUM "1"
          (+ normal / bacterial / viral probabilities for a three-class model)
        > CODE (233604007, SCT, "Pneumonia") = (52101004, SCT, "Present") | (272519000, SCT, "Absent")
        > IMAGE (121112, DCM, "Source of Measurement") -> the image (per-image groups only)
    > CONTAINER (C0034375, UMLS, "Qualitative Evaluations")
      > TEXT (NOT-INTENDED-USE, 99PNEUMONIA, "Outside intended use") = "pneumonia image N: ..."
        (one per image whose patient is outside the model's intended ages; see ``intended_use``)
      > TEXT (121106, DCM, "Comment") = "NOT FOR DIAGNOSTIC USE ..."

This follows IHE AI Results (AIR) and what OHIF v3 needs to display a TID 1500 report: an Image
Library, a Tracking Identifier and a Tracking Unique Identifier in every measurement group, the
qualitative finding with the probability beside it as a NUM, and the algorithm identified (TID 4019)
on every group and measurement.

Choice of concepts:

- The finding is the SNOMED CT disorder *Pneumonia* (233604007), given as the TID 1501 "Finding"
  (121071, DCM). Its presence is a TID 1501 qualitative evaluation whose concept name is the finding
  itself and whose value comes from CID 240/241 "Present-Absent": SCT 52101004 "Present" and
  SCT 272519000 "Absent" - the codes pydicom's dictionary (generated from the current PS3.16) lists;
  older editions used SCT 2667000 for "Absent".
- The probability has no standard concept: DCM 111047 "Probability of cancer" is specific to cancer
  and DCM 111012 "Certainty of Finding" belongs to the mammography/chest CAD templates (in %). MONAI
  Deploy's SR writer sidesteps the question by writing free text in a Basic Text SR. Here the
  probability is a coded NUM with a *private* concept from the local coding scheme ``99PNEUMONIA``
  (PS3.3 8.2: designators beginning with "99" are private), declared in the Coding Scheme
  Identification Sequence as PS3.3 C.12.1.1.2 requires; its unit is UCUM "1" (unity, CID 7181).
- The study-level group carries the **maximum** probability over the study's images (its NUM has the
  TID 300 modifier Derivation = (56851009, SCT, "Maximum"), CID 7464) and is Present when any image is
  Present - the same decision as thresholding the maximum, for a decision rule that is monotone in the
  probability. It references no image, which by TID 1501 means "all images of the report".

Image library: always present (OHIF v3 and IHE AIR readers look for the referenced images there).
highdicom's TID 1603 projection descriptors need Patient Orientation and Imager Pixel Spacing, which
real CR headers and Secondary Captures often lack (pydicom-data's RG1 chest CR has no Imager Pixel
Spacing); TID 1603's rows are all optional, so an image that lacks either is described by its TID 1602
descriptors alone (modality, frame of reference, rows, columns), never left out.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom import config as pydicom_config
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, DT, TM, validate_value

from pneumonia_monai import checks
from pneumonia_monai.dicom.intended_use import INTENDED_USE_VALUES, NO, UNKNOWN
from pneumonia_monai.dicom.uids import derived_uid, result_uids, result_version
from pneumonia_monai.dicom.values import check_long_string, check_positive_int, check_uid

logger = logging.getLogger(__name__)

#: Every Series Description of this package's DICOM outputs starts with this (selection relies on it).
SERIES_DESCRIPTION_PREFIX = "pneumonia_monai"
#: The disclaimer carried by every output.
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
#: Series Description of the reports (LO, at most 64 characters).
SR_SERIES_DESCRIPTION = f"{SERIES_DESCRIPTION_PREFIX} AI pneumonia result - {NOT_FOR_DIAGNOSTIC_USE}"
#: Text of the disclaimer content item.
DISCLAIMER_TEXT = (
    f"{NOT_FOR_DIAGNOSTIC_USE}. Research software output: the probability of pneumonia estimated by a "
    "machine learning model from frontal chest radiographs. Not a medical device; not verified by a "
    "physician."
)

#: Designator of the private coding scheme of the concepts DICOM does not define.
PRIVATE_SCHEME = "99PNEUMONIA"
#: Its Coding Scheme Name in the Coding Scheme Identification Sequence.
PRIVATE_SCHEME_NAME = "pneumonia_monai private concepts"

PNEUMONIA = Code("233604007", "SCT", "Pneumonia")
PLAIN_CHEST_XRAY = Code("399208008", "SCT", "Plain X-ray of chest")
PRESENT: Code = codes.SCT.Present  # 52101004
ABSENT: Code = codes.SCT.Absent  # 272519000
PROBABILITY_UNIT: Code = codes.UCUM.NoUnits  # "1"
PROB_PNEUMONIA = Code("PNEUMONIA-PROB", PRIVATE_SCHEME, "Probability of pneumonia")
PROB_NORMAL = Code("NORMAL-PROB", PRIVATE_SCHEME, "Probability of normal")
PROB_BACTERIAL = Code("BACTERIAL-PROB", PRIVATE_SCHEME, "Probability of bacterial pneumonia")
PROB_VIRAL = Code("VIRAL-PROB", PRIVATE_SCHEME, "Probability of viral pneumonia")
#: (Private code values stay within 16 characters: a Code Value, which every reader reads, not a
#: Long Code Value.)
OUTSIDE_INTENDED_USE = Code("NOT-INTENDED-USE", PRIVATE_SCHEME, "Outside intended use")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")

#: Tolerance of the consistency checks between the probabilities of a three-class model.
_PROBABILITY_SUM_TOLERANCE = 1e-3

#: Modalities for which highdicom's image library entry needs projection-radiography descriptors,
#: and the attributes it reads (TID 1603); cross-sectional ones (TID 1604).
_PROJECTION_MODALITIES = frozenset({"CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA"})
_PROJECTION_DESCRIPTORS = ("PatientOrientation", "ImagerPixelSpacing")
_CROSS_SECTIONAL_MODALITIES = frozenset({"CT", "MR", "PT"})
_CROSS_SECTIONAL_DESCRIPTORS = (
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
)

#: Type 2 attributes highdicom reads from the first source; empty (unknown) when the source lacks them.
_TYPE2_PATIENT_STUDY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


@dataclass(frozen=True)
class ImageFinding:
    """The classifier's result for one image.

    Attributes:
        sop_instance_uid: SOP Instance UID of the image.
        sop_class_uid: SOP Class UID of the image.
        prob_pneumonia: probability of pneumonia in [0, 1] (for a three-class model, bacterial + viral).
        present: the decision (pneumonia present), as made by the caller's decision rule.
        prob_normal: three-class models only: probability of a normal film.
        prob_bacterial: three-class models only: probability of bacterial pneumonia.
        prob_viral: three-class models only: probability of viral pneumonia.
        intended_use: ``yes``, ``no`` or ``unknown`` (:mod:`pneumonia_monai.dicom.intended_use`): a
            film outside the model's intended use (``no``) gets a note in the report.

    Raises:
        TypeError, ValueError: on construction, if a value is invalid; for a three-class result, if the
            three class probabilities do not sum to 1 or ``prob_pneumonia`` is not bacterial + viral
            (within 1e-3).
    """

    sop_instance_uid: str
    sop_class_uid: str
    prob_pneumonia: float
    present: bool
    prob_normal: float | None = None
    prob_bacterial: float | None = None
    prob_viral: float | None = None
    intended_use: str = UNKNOWN

    def __post_init__(self) -> None:
        if self.intended_use not in INTENDED_USE_VALUES:
            raise ValueError(f"intended_use must be one of {INTENDED_USE_VALUES}, got {self.intended_use!r}")
        # Values are normalised to builtin types (numpy scalars from the model are accepted; highdicom
        # needs a builtin float), hence object.__setattr__ on this frozen dataclass.
        object.__setattr__(self, "sop_instance_uid", check_uid("sop_instance_uid", self.sop_instance_uid))
        object.__setattr__(self, "sop_class_uid", check_uid("sop_class_uid", self.sop_class_uid))
        object.__setattr__(self, "prob_pneumonia", checks.probability("prob_pneumonia", self.prob_pneumonia))
        if not isinstance(self.present, bool | np.bool_):
            raise TypeError(f"present must be a bool, got {type(self.present).__name__}")
        object.__setattr__(self, "present", bool(self.present))
        subtype = {
            "prob_normal": self.prob_normal,
            "prob_bacterial": self.prob_bacterial,
            "prob_viral": self.prob_viral,
        }
        given = [name for name, value in subtype.items() if value is not None]
        if given and len(given) != len(subtype):
            missing = sorted(set(subtype) - set(given))
            raise ValueError(f"three-class probabilities must be given together; missing {missing}")
        if not given:
            return
        for name, value in subtype.items():
            object.__setattr__(self, name, checks.probability(name, value))
        normal, bacterial, viral = (getattr(self, name) for name in subtype)
        total = normal + bacterial + viral
        if abs(total - 1.0) > _PROBABILITY_SUM_TOLERANCE:
            raise ValueError(f"prob_normal + prob_bacterial + prob_viral must be 1, got {total!r}")
        if abs(bacterial + viral - self.prob_pneumonia) > _PROBABILITY_SUM_TOLERANCE:
            raise ValueError(
                f"prob_pneumonia ({self.prob_pneumonia!r}) must equal prob_bacterial + prob_viral "
                f"({bacterial + viral!r})"
            )

    @property
    def has_subtypes(self) -> bool:
        """Whether the finding carries the probabilities of a three-class model."""
        return self.prob_normal is not None

    @property
    def subtype_probabilities(self) -> tuple[float, float, float] | None:
        """``(prob_normal, prob_bacterial, prob_viral)`` of a three-class model; None for two classes."""
        if self.prob_normal is None or self.prob_bacterial is None or self.prob_viral is None:
            return None
        return self.prob_normal, self.prob_bacterial, self.prob_viral


#: Attributes of a source the report needs besides its Patient and Study modules: identification,
#: the character set, and what highdicom's image library entry reads (TID 1602-1604).
_NEEDED_ATTRIBUTES = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "FrameOfReferenceUID",
    *_PROJECTION_DESCRIPTORS,
    *_CROSS_SECTIONAL_DESCRIPTORS,
)
#: Value representations highdicom parses (and rejects when they do not parse).
_TEMPORAL_VRS = {"DA": DA, "DT": DT, "TM": TM}


@functools.lru_cache(maxsize=64)
def _patient_study_keywords(sop_class_uid: str) -> tuple[str, ...]:
    """Root attributes of the Patient and Study modules of ``sop_class_uid``'s IOD (what highdicom copies)."""
    iod = get_sop_class_iod_map().get(sop_class_uid)
    if iod is None:
        return (*_TYPE2_PATIENT_STUDY, "ReferringPhysicianName")
    attributes = get_module_attribute_map()
    keywords: list[str] = []
    for module in get_iod_module_map()[iod]:
        if module["ie"] in ("Patient", "Study"):
            keywords += [str(item["keyword"]) for item in attributes[module["key"]] if not item["path"]]
    return tuple(dict.fromkeys(keywords))


def _readable_element(ds: pydicom.Dataset, tag: int) -> pydicom.DataElement | None:
    """A copy of element ``tag`` of ``ds`` if its value can be read and is valid for its VR, else None.

    The value is never put in an exception or log message: a source's patient attributes are PHI.
    """
    try:
        element = ds[tag]  # converts a raw element: an unknown VR raises here
        value = element.value
        if element.VR != "SQ" and value not in (None, ""):
            for item in value if isinstance(value, MultiValue) else [value]:
                if isinstance(item, str):  # numbers and person names were parsed already
                    validate_value(element.VR, item, pydicom_config.RAISE)
                if element.VR in _TEMPORAL_VRS and item not in (None, ""):
                    _TEMPORAL_VRS[element.VR](item)
        return copy.deepcopy(element)
    except Exception:  # noqa: BLE001 - any failure to read a value leaves the element out (logged, by tag)
        return None


def readable_copy(ds: pydicom.Dataset, label: str, extra: Sequence[str] = ()) -> pydicom.Dataset:
    """Copy the attributes of a source image that a result object needs, each only if it can be read.

    The attributes are the source IOD's Patient and Study modules (what highdicom copies into a
    derived object), the identifying UIDs, the image library descriptors and ``extra``. An element
    that cannot be read (an unknown VR, a value that does not parse for its VR) is left out with a
    warning naming ``label``, its tag and its keyword, never its value. ``ds`` is not modified.

    Args:
        ds: the source's header.
        label: how the source is named in the log (``"source_datasets[0]"``).
        extra: further keywords to copy.

    Returns:
        A new dataset with the readable attributes.
    """
    keywords = [*_NEEDED_ATTRIBUTES, *extra]
    sop_class = _readable_element(ds, 0x00080016)
    if sop_class is not None:
        keywords += _patient_study_keywords(str(sop_class.value))
    copied = pydicom.Dataset()
    for keyword in dict.fromkeys(keywords):
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in ds:
            continue
        element = _readable_element(ds, tag)
        if element is None:
            logger.warning(
                "%s: element %s %s is unreadable or invalid; left out",
                label,
                Tag(tag),
                keyword,
            )
            continue
        copied[tag] = element
    return copied


def _validate_sources(source_datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    if isinstance(source_datasets, pydicom.Dataset) or not isinstance(source_datasets, Sequence):
        raise TypeError(
            f"source_datasets must be a sequence of datasets, got {type(source_datasets).__name__}"
        )
    originals = list(source_datasets)
    if not originals:
        raise ValueError("source_datasets is empty: a report needs at least one source image")
    for index, ds in enumerate(originals):
        if not isinstance(ds, pydicom.Dataset):
            raise TypeError(f"source_datasets[{index}] must be a pydicom.Dataset, got {type(ds).__name__}")
    sources = [readable_copy(ds, f"source_datasets[{index}]") for index, ds in enumerate(originals)]
    for index, ds in enumerate(sources):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            if not ds.get(keyword):
                raise ValueError(f"source_datasets[{index}] has no {keyword}")
        for keyword, tag in (("Rows", "(0028,0010)"), ("Columns", "(0028,0011)")):
            if not isinstance(ds.get(keyword), int):  # the image library entry needs both
                raise ValueError(f"source_datasets[{index}] has no {keyword} {tag}")
    studies = sorted({str(ds.StudyInstanceUID) for ds in sources})
    if len(studies) > 1:
        raise ValueError(f"source_datasets belong to more than one study: StudyInstanceUIDs {studies}")
    seen: set[str] = set()
    for ds in sources:
        uid = str(ds.SOPInstanceUID)
        if uid in seen:
            raise ValueError(f"source_datasets lists SOPInstanceUID {uid} more than once")
        seen.add(uid)
    return sources


def _validate_findings(
    findings: Sequence[ImageFinding], sources: list[pydicom.Dataset]
) -> list[ImageFinding]:
    if not isinstance(findings, Sequence):
        raise TypeError(f"findings must be a sequence of ImageFinding, got {type(findings).__name__}")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    ordered: dict[str, ImageFinding] = {}
    for index, finding in enumerate(findings):
        if not isinstance(finding, ImageFinding):
            raise TypeError(f"findings[{index}] must be an ImageFinding, got {type(finding).__name__}")
        source = by_uid.get(finding.sop_instance_uid)
        if source is None:
            raise ValueError(
                f"findings[{index}] refers to SOPInstanceUID {finding.sop_instance_uid}, not a source"
            )
        if finding.sop_class_uid != str(source.SOPClassUID):
            raise ValueError(
                f"findings[{index}] gives SOPClassUID {finding.sop_class_uid} for SOPInstanceUID "
                f"{finding.sop_instance_uid}, whose SOPClassUID is {source.SOPClassUID}"
            )
        if finding.sop_instance_uid in ordered:
            raise ValueError(f"more than one finding for SOPInstanceUID {finding.sop_instance_uid}")
        ordered[finding.sop_instance_uid] = finding
    without = [uid for uid in by_uid if uid not in ordered]
    if without:
        raise ValueError(f"no finding for source SOPInstanceUIDs {without}")
    kinds = {finding.has_subtypes for finding in ordered.values()}
    if len(kinds) > 1:
        raise ValueError("findings mix two-class and three-class results")
    return [ordered[uid] for uid in by_uid]  # in the order of the sources


def _library_descriptors_missing(ds: pydicom.Dataset) -> list[str]:
    """Modality descriptors (TID 1603/1604) that highdicom's image library entry reads and ``ds`` lacks."""
    modality = ds.get("Modality")
    if modality in _PROJECTION_MODALITIES:
        required: tuple[str, ...] = _PROJECTION_DESCRIPTORS
    elif modality in _CROSS_SECTIONAL_MODALITIES:
        required = _CROSS_SECTIONAL_DESCRIPTORS
    else:
        return []
    missing = [keyword for keyword in required if ds.get(keyword) in (None, "", [])]
    orientation = ds.get("PatientOrientation")
    if "PatientOrientation" in required and orientation and len(orientation) != 2:
        missing.append("PatientOrientation")
    return missing


def _library_entry_source(ds: pydicom.Dataset) -> pydicom.Dataset:
    """What the image library describes of ``ds``: itself, or a copy without modality descriptors.

    When ``ds`` lacks the TID 1603/1604 descriptors, the copy's Modality asks for none, so its entry
    keeps the TID 1602 descriptors (modality from the SOP class, frame of reference, rows, columns).
    """
    if not _library_descriptors_missing(ds):
        return ds
    entry = pydicom.Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
        if keyword in ds:
            setattr(entry, keyword, ds.get(keyword))
    entry.Modality = ""  # neither projection nor cross-sectional: TID 1602 descriptors only
    return entry


def intended_use_note(identifier: str, criterion: str | None) -> str:
    """The text of the report's note for an image outside the model's intended use."""
    within = f" ({criterion})" if criterion else ""
    return (
        f"{identifier}: outside the intended use of the model{within}; the result is not validated "
        "for this patient."
    )


def _evidence_header(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of ``ds`` (a :func:`readable_copy`) in which the Type 2 patient/study attributes exist.

    A missing Type 2 attribute is added empty ("unknown"), and a Patient's Sex outside M/F/O (invalid
    DICOM) is emptied, rather than failing the report.
    """
    header = copy.deepcopy(ds)
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, None)
    if header.PatientSex not in (None, "", "M", "F", "O"):
        logger.warning("source Patient's Sex is not M, F or O; the report leaves it empty")
        header.PatientSex = None
    return header


def _algorithm_parameters(threshold: float, operating_point: str | None = None) -> list[str]:
    """The Algorithm Parameters (TID 4019) of the report: the threshold, and a site operating point."""
    parameters = [f"decision threshold on the probability of pneumonia={threshold!r}"]
    if operating_point:
        parameters.append(f"operating point={operating_point}")
    return parameters


def _probability(
    name: Code, value: float, algorithm_id: hd.sr.AlgorithmIdentification, derivation: Code | None = None
) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=name, value=value, unit=PROBABILITY_UNIT, derivation=derivation, algorithm_id=algorithm_id
    )


def _group(
    identifier: str,
    measurements: list[hd.sr.Measurement],
    present: bool,
    algorithm_id: hd.sr.AlgorithmIdentification,
    source_images: list[hd.sr.SourceImageForMeasurementGroup] | None,
    tracking_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    # The tracking UID is derived from the report's own UID: the same report has the same content.
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=identifier),
        finding_type=PNEUMONIA,
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=PNEUMONIA, value=PRESENT if present else ABSENT)
        ],
        source_images=source_images,
    )


def default_device_observer_uid(manufacturer: str, algorithm_name: str, algorithm_version: str) -> str:
    """A UID for the algorithm as an observing device, the same for every run of the same version.

    Derived (pydicom's ``generate_uid`` with entropy sources) from the manufacturer, name and version,
    so that all reports of one algorithm version share their Device Observer UID.
    """
    return str(
        generate_uid(
            entropy_srcs=["pneumonia_monai device observer", manufacturer, algorithm_name, algorithm_version]
        )
    )


@dataclass(frozen=True)
class _Report:
    """A validated report, ready to be built (by highdicom or item by item)."""

    sources: list[pydicom.Dataset]
    findings: list[ImageFinding]
    algorithm_name: str
    algorithm_version: str
    parameters: tuple[str, ...]
    manufacturer: str
    device_observer_uid: str
    series_uid: str
    sop_uid: str
    series_number: int
    instance_number: int
    notes: tuple[str, ...]

    @property
    def study_probability(self) -> float:
        """The maximum probability over the images."""
        return max(finding.prob_pneumonia for finding in self.findings)

    @property
    def study_present(self) -> bool:
        """Present when any image is."""
        return any(finding.present for finding in self.findings)

    def tracking_uid(self, identifier: str) -> str:
        """The Tracking Unique Identifier of a group, derived from the report's UID and the group's name."""
        return str(derived_uid("sr tracking", self.sop_uid, identifier))

    def log_built(self) -> None:
        logger.info(
            "built pneumonia SR for %d image(s): study probability %.4f, %s",
            len(self.findings),
            self.study_probability,
            "present" if self.study_present else "absent",
        )


def image_group_identifier(number: int) -> str:
    """The Tracking Identifier of the group of the ``number``-th image (1-based)."""
    return f"pneumonia image {number}"


#: The Tracking Identifier of the study's group.
STUDY_GROUP_IDENTIFIER = "pneumonia study"


def _prepare(
    source_datasets: Sequence[pydicom.Dataset],
    findings: Sequence[ImageFinding],
    *,
    algorithm_name: str,
    algorithm_version: str,
    threshold: float,
    series_number: int,
    instance_number: int,
    manufacturer: str,
    device_observer_uid: str | None,
    operating_point: str | None,
    intended_use: str | None,
) -> _Report:
    """Validate the arguments of :func:`build_pneumonia_sr` (see there for what is raised)."""
    sources = _validate_sources(source_datasets)
    ordered = _validate_findings(findings, sources)
    threshold = checks.probability("threshold", threshold)
    check_long_string("algorithm_name", algorithm_name)
    check_long_string("algorithm_version", algorithm_version)
    check_long_string("manufacturer", manufacturer)
    check_positive_int("series_number", series_number)
    check_positive_int("instance_number", instance_number)
    if device_observer_uid is None:
        device_observer_uid = default_device_observer_uid(manufacturer, algorithm_name, algorithm_version)
    else:
        check_uid("device_observer_uid", device_observer_uid)

    if operating_point is not None and (not isinstance(operating_point, str) or not operating_point.strip()):
        raise ValueError(f"operating_point must be a non-empty string or None, got {operating_point!r}")
    if intended_use is not None:
        check_long_string("intended_use", intended_use)
    series_uid, sop_uid = result_uids(
        "sr",
        str(sources[0].StudyInstanceUID),
        result_version(algorithm_version, operating_point),
        [str(ds.SOPInstanceUID) for ds in sources],
    )
    notes = tuple(
        intended_use_note(image_group_identifier(number), intended_use)
        for number, finding in enumerate(ordered, start=1)
        if finding.intended_use == NO
    )
    return _Report(
        sources=sources,
        findings=ordered,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        parameters=tuple(_algorithm_parameters(threshold, operating_point)),
        manufacturer=manufacturer,
        device_observer_uid=device_observer_uid,
        series_uid=str(series_uid),
        sop_uid=str(sop_uid),
        series_number=series_number,
        instance_number=instance_number,
        notes=notes,
    )


def _image_groups(
    report: _Report, algorithm_id: hd.sr.AlgorithmIdentification
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """One measurement group per image: its probabilities (pneumonia, then the subtypes) and finding."""
    groups = []
    for number, finding in enumerate(report.findings, start=1):
        measurements = [_probability(PROB_PNEUMONIA, finding.prob_pneumonia, algorithm_id)]
        subtypes = finding.subtype_probabilities
        if subtypes is not None:
            normal, bacterial, viral = subtypes
            measurements += [
                _probability(PROB_NORMAL, normal, algorithm_id),
                _probability(PROB_BACTERIAL, bacterial, algorithm_id),
                _probability(PROB_VIRAL, viral, algorithm_id),
            ]
        source = hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=finding.sop_class_uid,
            referenced_sop_instance_uid=finding.sop_instance_uid,
        )
        groups.append(
            _group(
                image_group_identifier(number),
                measurements,
                finding.present,
                algorithm_id,
                [source],
                report.tracking_uid(image_group_identifier(number)),
            )
        )
    return groups


def _study_group(
    report: _Report, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study's group: the maximum probability over the images, Present when any image is."""
    study_measurement = _probability(
        PROB_PNEUMONIA, report.study_probability, algorithm_id, derivation=codes.SCT.Maximum
    )
    return _group(
        STUDY_GROUP_IDENTIFIER,
        [study_measurement],
        report.study_present,
        algorithm_id,
        None,
        report.tracking_uid(STUDY_GROUP_IDENTIFIER),
    )


def _device_observer(report: _Report) -> hd.sr.ObserverContext:
    """The observing device: the algorithm (TID 1004)."""
    return hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=report.device_observer_uid,
            name=report.algorithm_name,
            manufacturer_name=report.manufacturer,
            model_name=report.algorithm_name,
        ),
    )


def _log_library_gaps(sources: Sequence[pydicom.Dataset]) -> None:
    """Log (debug) which image library descriptors the sources lack: they are described without them."""
    lacking = {str(ds.SOPInstanceUID): _library_descriptors_missing(ds) for ds in sources}
    lacking = {uid: missing for uid, missing in lacking.items() if missing}
    if lacking:
        logger.debug(
            "image library: %d of %d source images lack %s; described without them",
            len(lacking),
            len(sources),
            sorted({keyword for missing in lacking.values() for keyword in missing}),
        )


def _qualitative_evaluations(notes: Sequence[str]) -> hd.sr.ContainerContentItem:
    """TID 1500 row "Qualitative Evaluations" (C0034375, UMLS): the notes, then the disclaimer.

    Study-level TEXT items, where readers of TID 1500 (e.g. the DICOM SR to FHIR mapping) look.
    """
    evaluations = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    evaluations.ContentSequence = hd.sr.ContentSequence(
        [
            *(
                hd.sr.TextContentItem(
                    name=OUTSIDE_INTENDED_USE,
                    value=note,
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
                for note in notes
            ),
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=DISCLAIMER_TEXT,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            ),
        ]
    )
    return evaluations


def _build_highdicom(report: _Report) -> hd.sr.ComprehensiveSR:
    """Build ``report`` with highdicom's template classes: the groups, the document, then the SR."""
    sources = report.sources
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=report.algorithm_name, version=report.algorithm_version, parameters=list(report.parameters)
    )
    groups = [*_image_groups(report, algorithm_id), _study_group(report, algorithm_id)]
    _log_library_gaps(sources)
    document = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=None, observer_device_context=_device_observer(report)
        ),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=groups,
        referenced_images=[_library_entry_source(ds) for ds in sources],
    )
    document[0].ContentSequence.append(_qualitative_evaluations(report.notes))
    return hd.sr.ComprehensiveSR(
        evidence=[_evidence_header(sources[0]), *sources[1:]],
        content=document[0],
        series_instance_uid=report.series_uid,
        series_number=report.series_number,
        sop_instance_uid=report.sop_uid,
        instance_number=report.instance_number,
        manufacturer=report.manufacturer,
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        manufacturer_model_name=report.algorithm_name,
        software_versions=report.algorithm_version,
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=PRIVATE_SCHEME,
                name=PRIVATE_SCHEME_NAME,
                responsible_organization=report.manufacturer,
            )
        ],
    )


def build_pneumonia_sr(
    source_datasets: Sequence[pydicom.Dataset],
    findings: Sequence[ImageFinding],
    *,
    algorithm_name: str,
    algorithm_version: str,
    threshold: float,
    series_number: int = 990,
    instance_number: int = 1,
    manufacturer: str = "pneumonia_monai",
    device_observer_uid: str | None = None,
    operating_point: str | None = None,
    intended_use: str | None = None,
) -> pydicom.Dataset:
    """Build the TID 1500 Measurement Report of one study: a finding per image and one for the study.

    The report is in the study of its sources, in a series of its own. Its Series and SOP Instance
    UIDs are derived from the Study Instance UID, ``algorithm_version`` and the sorted source SOP
    Instance UIDs (:func:`pneumonia_monai.dicom.uids.result_uids`): building the report of the same
    images with the same model again gives the same object. Its Patient and Study modules are copied
    from the first source (highdicom), from a copy of only the attributes the report needs; an element
    that cannot be read (an unknown VR, a date that does not parse) is left out with a warning that
    names its tag, never its value. Completion Flag PARTIAL,
    Verification Flag UNVERIFIED, Preliminary Flag PRELIMINARY: the result of an algorithm that no
    person has verified. The study-level finding is the maximum probability over the images and is
    Present when any image is Present (see the module docstring for the concepts used).

    Args:
        source_datasets: headers (pixel data not needed) of the frontal images of ONE study.
        findings: exactly one :class:`ImageFinding` per source image.
        algorithm_name: name of the model (Algorithm Name, Manufacturer's Model Name, device name).
        algorithm_version: version of the model (Algorithm Version, Software Versions).
        threshold: decision threshold in [0, 1] of the probability of pneumonia, recorded as an
            algorithm parameter.
        series_number: Series Number of the report.
        instance_number: Instance Number of the report.
        manufacturer: Manufacturer of the report and of the observing device.
        device_observer_uid: UID of the observing device; by default
            :func:`default_device_observer_uid` of the manufacturer, name and version.
        operating_point: where ``threshold`` comes from (``"bundle"``, or a site overlay's label,
            :mod:`pneumonia_monai.site_overlay`), recorded as a second algorithm parameter; a site
            operating point also enters the report's UIDs
            (:func:`~pneumonia_monai.dicom.uids.result_version`).
        intended_use: the model's intended use in words (e.g. ``"patient age 1 to 5 years"``, from
            :meth:`pneumonia_monai.dicom.intended_use.AgeRange.describe`), quoted in the note of each
            image whose finding has ``intended_use == "no"``.

    The report is built item by item (:mod:`pneumonia_monai.dicom.sr_direct`, a few milliseconds);
    :func:`build_pneumonia_sr_highdicom` builds the same report with highdicom's template classes,
    which check every content item (about ten times slower), and the tests pin the two to each other.

    Returns:
        The report; write it with :func:`pneumonia_monai.dicom.writer.write_dataset_atomic`.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if the sources are empty, from several studies or duplicated, a finding refers to
            an unknown image (or an image has no finding), or a value is out of range.
    """
    from pneumonia_monai.dicom.sr_direct import build_report

    report = _prepare(
        source_datasets,
        findings,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        threshold=threshold,
        series_number=series_number,
        instance_number=instance_number,
        manufacturer=manufacturer,
        device_observer_uid=device_observer_uid,
        operating_point=operating_point,
        intended_use=intended_use,
    )
    sr = build_report(report)
    report.log_built()
    return sr


def build_pneumonia_sr_highdicom(
    source_datasets: Sequence[pydicom.Dataset],
    findings: Sequence[ImageFinding],
    *,
    algorithm_name: str,
    algorithm_version: str,
    threshold: float,
    series_number: int = 990,
    instance_number: int = 1,
    manufacturer: str = "pneumonia_monai",
    device_observer_uid: str | None = None,
    operating_point: str | None = None,
    intended_use: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """:func:`build_pneumonia_sr` built with highdicom's TID 1500 classes: the reference it is tested against.

    Same arguments, same report (item for item, but for the creation date and time and highdicom's
    Contributing Equipment item); every content item is checked by highdicom as it is built.
    """
    report = _prepare(
        source_datasets,
        findings,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        threshold=threshold,
        series_number=series_number,
        instance_number=instance_number,
        manufacturer=manufacturer,
        device_observer_uid=device_observer_uid,
        operating_point=operating_point,
        intended_use=intended_use,
    )
    sr = _build_highdicom(report)
    report.log_built()
    return sr
