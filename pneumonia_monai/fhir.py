"""The classifier's result for one study as a FHIR R5 Bundle, after HL7's DICOM SR to FHIR mapping guide.

HL7's *DICOM SR to FHIR Resource Mapping* implementation guide (``hl7.fhir.uv.dicom-sr``, STU1, based
on FHIR 5.0.0) maps a TID 1500 Measurement Report to FHIR: the report to a DiagnosticReport, each
measurement group and qualitative evaluation to an Observation, TID 4019 Algorithm Identification to a
Device, and the images a group was measured on to ImagingSelection resources. This module writes the
same content as the study's SR (:mod:`pneumonia_monai.dicom.sr`) that way, as plain JSON (``dict``),
so that running it needs no FHIR library; the tests validate it with the ``fhir.resources`` R5 models.

One ``transaction`` Bundle per study, every entry a ``PUT`` of its own id::

    Device               the algorithm: name, version, manufacturer; its decision threshold and
                         operating point as properties (DCM 111002 Algorithm Parameters); identified by
                         the SR's Device Observer UID (urn:oid:)
    ImagingSelection     one per source image: Study Instance UID, SOP Instance and Class UIDs
    Observation          one per image: code SCT 233604007 Pneumonia, value SCT 52101004 Present or
                         SCT 272519000 Absent, the probability of pneumonia as a component (UCUM "1"),
                         derivedFrom its ImagingSelection
    Observation          the study: the same, at the maximum probability over the images
                         (method SCT 56851009 Maximum), derivedFrom the image Observations
    DiagnosticReport     status preliminary (the SR is PRELIMINARY / UNVERIFIED), identified by the SR's
                         SOP Instance UID (urn:oid:), results: the Observations, study: the study

Every Observation and the DiagnosticReport have status ``preliminary``, ``partOf``/``study`` naming the
study by its Study Instance UID (a logical reference: ``identifier`` system ``urn:dicom:uid``, value
``urn:oid:<UID>``, as the guide does; the ImagingStudy is expected to exist in the site's FHIR server).

No patient data: the guide maps Patient ID (0010,0020) to ``subject``; this Bundle writes no name, id
or birth date. Its ``subject`` is a logical reference (``type`` Patient) whose identifier is the Study
Instance UID, which the site's interface engine maps to its own Patient resource (it knows which
patient a study belongs to; nothing here does).

Identifiers are deterministic: every resource id is a name-based UUID
(:func:`pneumonia_monai.dicom.uids.derived_uuid`) of the study, the model version (with a site
operating point, :func:`~pneumonia_monai.dicom.uids.result_version`) and the source images, like the
SR's UIDs, so a rerun writes the same resources and a re-sent Bundle updates them instead of adding
copies. Only ``issued`` (the time the result was made) changes between runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumonia_monai import checks
from pneumonia_monai.atomic import write_json_atomic
from pneumonia_monai.dicom.intended_use import NO
from pneumonia_monai.dicom.sr import (
    DISCLAIMER_TEXT,
    PRIVATE_SCHEME,
    ImageFinding,
    default_device_observer_uid,
    image_group_identifier,
    intended_use_note,
)
from pneumonia_monai.dicom.uids import derived_uuid, result_uids, result_version
from pneumonia_monai.dicom.values import check_uid

logger = logging.getLogger(__name__)

#: The FHIR version the mapping guide (and so this Bundle) is based on.
FHIR_VERSION = "5.0.0"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
UMLS = "http://terminology.hl7.org/CodeSystem/umls"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
#: Identifier system of DICOM UIDs (values ``urn:oid:<UID>``), as the mapping guide uses it.
DICOM_UID_SYSTEM = "urn:dicom:uid"
#: Code system of the concepts of the private DICOM coding scheme ``99PNEUMONIA`` (no public URI).
PRIVATE_CODE_SYSTEM = f"urn:pneumonia-monai:{PRIVATE_SCHEME}"
#: Folder of the Bundles in an ``infer`` output folder.
FHIR_DIR = "fhir"


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": display}


PNEUMONIA = _concept(SNOMED, "233604007", "Pneumonia")
PRESENT = _concept(SNOMED, "52101004", "Present")
ABSENT = _concept(SNOMED, "272519000", "Absent")
MAXIMUM = _concept(SNOMED, "56851009", "Maximum")
ALGORITHM_PARAMETERS = _concept(DCM, "111002", "Algorithm Parameters")
SOURCE_OF_MEASUREMENT = _concept(DCM, "121112", "Source of Measurement")
STUDY_INSTANCE_UID = _concept(DCM, "110180", "Study Instance UID")
_PROBABILITIES = (
    ("prob_pneumonia", "PNEUMONIA-PROB", "Probability of pneumonia"),
    ("prob_normal", "NORMAL-PROB", "Probability of normal"),
    ("prob_bacterial", "BACTERIAL-PROB", "Probability of bacterial pneumonia"),
    ("prob_viral", "VIRAL-PROB", "Probability of viral pneumonia"),
)


def _urn_oid(uid: str) -> str:
    return f"urn:oid:{uid}"


def _study_reference(study_uid: str, resource_type: str = "ImagingStudy") -> dict[str, Any]:
    """A logical reference naming the study by its Study Instance UID (no resource of ours)."""
    return {
        "type": resource_type,
        "identifier": {"type": STUDY_INSTANCE_UID, "system": DICOM_UID_SYSTEM, "value": _urn_oid(study_uid)},
    }


def _subject(study_uid: str) -> dict[str, Any]:
    """The patient, as a reference the site maps: the patient of this study (no patient value)."""
    reference = _study_reference(study_uid, "Patient")
    reference["display"] = "the patient of this study (mapped by the site)"
    return reference


def _probability(code: str, display: str, value: float) -> dict[str, Any]:
    return {
        "code": _concept(PRIVATE_CODE_SYSTEM, code, display),
        "valueQuantity": {"value": value, "unit": "1", "system": UCUM, "code": "1"},
    }


def _issued(when: dt.datetime | None) -> str:
    moment = dt.datetime.now(dt.timezone.utc) if when is None else when
    if moment.tzinfo is None:
        raise ValueError(f"issued must be an aware datetime (with a time zone), got {moment!r}")
    return moment.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


def build_study_bundle(
    study_uid: str,
    findings: Sequence[ImageFinding],
    *,
    algorithm_name: str,
    algorithm_version: str,
    threshold: float,
    operating_point: str | None = None,
    manufacturer: str = "pneumonia_monai",
    issued: dt.datetime | None = None,
    intended_use: str | None = None,
) -> dict[str, Any]:
    """Build the FHIR R5 transaction Bundle of one study's result (see the module documentation).

    Args:
        study_uid: Study Instance UID (0020,000D) of the images.
        findings: one :class:`~pneumonia_monai.dicom.sr.ImageFinding` per frontal image of the study, as
            for its SR (the decision made by the caller's rule).
        algorithm_name: the model's name, as in the SR.
        algorithm_version: the model's version, as in the SR.
        threshold: the decision threshold the findings were called at.
        operating_point: where ``threshold`` comes from (``"bundle"`` or a site overlay's label).
        manufacturer: the algorithm's manufacturer (as in the SR's device observer).
        issued: when the result was made (default: now, UTC).
        intended_use: the model's intended use in words (as for the SR); the Observation of an image
            whose ``intended_use`` is ``no`` carries the SR's note saying it is outside it.

    Returns:
        The Bundle as a JSON-ready ``dict``.

    Raises:
        TypeError, ValueError: naming the bad argument (no findings, two findings of one image, a bad
            UID or probability).
    """
    study_uid = check_uid("study_uid", study_uid)
    if isinstance(findings, ImageFinding) or not isinstance(findings, Sequence) or not findings:
        raise ValueError("findings must be a non-empty sequence of ImageFinding")
    for index, finding in enumerate(findings):
        if not isinstance(finding, ImageFinding):
            raise TypeError(f"findings[{index}] must be an ImageFinding, got {type(finding).__name__}")
    sop_uids = [finding.sop_instance_uid for finding in findings]
    if len(set(sop_uids)) != len(sop_uids):
        raise ValueError(f"findings name an image more than once: {sorted(sop_uids)}")
    if len({finding.has_subtypes for finding in findings}) > 1:
        raise ValueError("findings mix two-class and three-class results")
    threshold = checks.probability("threshold", threshold)
    for name, value in (("algorithm_name", algorithm_name), ("algorithm_version", algorithm_version)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    version = result_version(algorithm_version, operating_point)
    sources = sorted(sop_uids)
    when = _issued(issued)

    def new_id(kind: str, *parts: str) -> str:
        return str(derived_uuid(f"fhir {kind}", study_uid, version, *sources, *parts))

    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> dict[str, str]:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{resource['id']}",
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
        )
        return {"reference": f"urn:uuid:{resource['id']}", "type": resource["resourceType"]}

    parameters = [f"decision threshold on the probability of pneumonia={threshold!r}"]
    if operating_point:
        parameters.append(f"operating point={operating_point}")
    device_uid = default_device_observer_uid(manufacturer, algorithm_name, algorithm_version)
    device = add(
        {
            "resourceType": "Device",
            "id": str(derived_uuid("fhir device", manufacturer, algorithm_name, version)),
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": _urn_oid(device_uid)}],
            "displayName": algorithm_name,
            "name": [{"value": algorithm_name, "type": "user-friendly-name"}],
            "manufacturer": manufacturer,
            "version": [{"value": algorithm_version}],
            "property": [{"type": ALGORITHM_PARAMETERS, "valueString": text} for text in parameters],
            "note": [{"text": DISCLAIMER_TEXT}],
        }
    )
    common = {
        "status": "preliminary",
        "category": [
            _concept(OBSERVATION_CATEGORY, "imaging", "Imaging"),
            _concept(UMLS, "C0034375", "Qualitative Evaluations"),
        ],
        "code": PNEUMONIA,
        "subject": _subject(study_uid),
        "partOf": [_study_reference(study_uid)],
        "issued": when,
        "device": device,
    }

    def components(finding: ImageFinding, *, study: bool) -> list[dict[str, Any]]:
        names = _PROBABILITIES if finding.has_subtypes and not study else _PROBABILITIES[:1]
        return [_probability(code, display, float(getattr(finding, key))) for key, code, display in names]

    image_refs = []
    for number, finding in enumerate(findings, start=1):
        outside = (
            {"note": [{"text": intended_use_note(image_group_identifier(number), intended_use)}]}
            if finding.intended_use == NO
            else {}
        )
        selection = add(
            {
                "resourceType": "ImagingSelection",
                "id": str(derived_uuid("fhir imaging selection", study_uid, finding.sop_instance_uid)),
                "status": "available",
                "subject": _subject(study_uid),
                "code": SOURCE_OF_MEASUREMENT,
                "studyUid": study_uid,
                "derivedFrom": [_study_reference(study_uid)],
                "instance": [
                    {
                        "uid": finding.sop_instance_uid,
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": _urn_oid(finding.sop_class_uid)},
                    }
                ],
            }
        )
        image_refs.append(
            add(
                {
                    "resourceType": "Observation",
                    "id": new_id("observation", finding.sop_instance_uid),
                    **common,
                    "valueCodeableConcept": PRESENT if finding.present else ABSENT,
                    "component": components(finding, study=False),
                    "derivedFrom": [selection],
                    **outside,
                }
            )
        )
    top = max(findings, key=lambda finding: finding.prob_pneumonia)
    present = any(finding.present for finding in findings)
    study_observation = add(
        {
            "resourceType": "Observation",
            "id": new_id("observation", "study"),
            **common,
            "method": MAXIMUM,
            "valueCodeableConcept": PRESENT if present else ABSENT,
            "component": components(top, study=True),
            "derivedFrom": image_refs,
        }
    )
    sr_uid = result_uids("sr", study_uid, version, sources)[1]
    conclusion = (
        f"Pneumonia {'present' if present else 'absent'}: highest probability {top.prob_pneumonia:.3f} over "
        f"{len(findings)} frontal film(s), decision threshold {threshold:.6g} "
        f"({operating_point or 'bundle'}). {DISCLAIMER_TEXT}"
    )
    add(
        {
            "resourceType": "DiagnosticReport",
            "id": new_id("report"),
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": _urn_oid(str(sr_uid))}],
            "status": "preliminary",
            "category": [_concept(V2_0074, "RAD", "Radiology")],
            "code": {
                "coding": [
                    _coding(LOINC, "18748-4", "Diagnostic imaging study"),
                    _coding(DCM, "126000", "Imaging Measurement Report"),
                ],
                "text": "AI pneumonia result",
            },
            "subject": _subject(study_uid),
            "issued": when,
            "study": [_study_reference(study_uid)],
            "result": [study_observation, *image_refs],
            "conclusion": conclusion,
            "conclusionCode": [PRESENT if present else ABSENT],
            "note": [{"text": DISCLAIMER_TEXT}],
        }
    )
    bundle = {
        "resourceType": "Bundle",
        "id": new_id("bundle"),
        "type": "transaction",
        "entry": entries,
    }
    logger.debug("FHIR bundle of %d image(s): %d resources", len(findings), len(entries))
    return bundle


def write_bundle_atomic(path: str | Path, bundle: dict[str, Any]) -> Path:
    """Write ``bundle`` as JSON to ``path`` atomically and durably; return the path."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValueError("bundle must be a FHIR Bundle (a dict with resourceType 'Bundle')")
    return write_json_atomic(path, bundle, indent=1, fsync=True)
