"""The FHIR R5 result Bundle of a study (pneumonia_monai.fhir), validated with the fhir.resources models."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from fhir.resources import __fhir_version__
from fhir.resources.bundle import Bundle

from pneumonia_monai.dicom.sr import ImageFinding, image_group_identifier, intended_use_note
from pneumonia_monai.dicom.uids import result_uids, result_version
from pneumonia_monai.fhir import FHIR_VERSION, build_study_bundle

STUDY = "1.2.826.0.1.3680043.8.498.1"
CR = "1.2.840.10008.5.1.4.1.1.1"
FINDINGS = [
    ImageFinding("1.2.826.0.1.3680043.8.498.1.1", CR, 0.91, True),
    ImageFinding("1.2.826.0.1.3680043.8.498.1.2", CR, 0.12, False),
]
WHEN = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc)
KW: dict[str, Any] = {
    "algorithm_name": "pneumonia_densenet121",
    "algorithm_version": "0.3.0",
    "threshold": 0.85,
}


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


def test_bundle_validates_as_fhir_r5_and_maps_the_sr_content():
    assert __fhir_version__ == FHIR_VERSION == "5.0.0"  # the version the DICOM SR to FHIR guide is based on
    bundle = build_study_bundle(STUDY, FINDINGS, **KW, issued=WHEN)
    parsed = Bundle.model_validate(bundle)  # raises on any element the R5 models do not accept
    assert parsed.type == "transaction"
    assert sorted(e.resource.get_resource_type() for e in parsed.entry) == sorted(
        ["Device", "DiagnosticReport", *["ImagingSelection"] * 2, *["Observation"] * 3]
    )
    for entry in bundle["entry"]:  # every entry is a PUT of its own id: re-sending updates, never copies
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"

    study_ref = {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY}"}
    (report,) = resources(bundle, "DiagnosticReport")
    assert report["status"] == "preliminary"
    assert [{k: report["study"][0]["identifier"][k] for k in study_ref}] == [study_ref]
    sr_uid = result_uids("sr", STUDY, "0.3.0", [f.sop_instance_uid for f in FINDINGS])[1]
    assert report["identifier"] == [{"system": "urn:dicom:uid", "value": f"urn:oid:{sr_uid}"}]  # the SR's

    (device,) = resources(bundle, "Device")
    assert device["displayName"] == "pneumonia_densenet121" and device["version"] == [{"value": "0.3.0"}]
    assert [p["valueString"] for p in device["property"]] == [
        "decision threshold on the probability of pneumonia=0.85"
    ]
    observations = {o["id"]: o for o in resources(bundle, "Observation")}
    assert {r["reference"].removeprefix("urn:uuid:") for r in report["result"]} == set(observations)
    by_image: dict[str, dict[str, Any]] = {}
    selections = {s["id"]: s for s in resources(bundle, "ImagingSelection")}
    for obs in observations.values():
        assert obs["status"] == "preliminary" and obs["issued"] == "2026-12-01T09:30:00+00:00"
        assert codes(obs["code"]) == {("http://snomed.info/sct", "233604007")}
        assert obs["device"]["reference"] == f"urn:uuid:{device['id']}"
        assert obs["partOf"][0]["identifier"]["value"] == f"urn:oid:{STUDY}"
        (component,) = obs["component"]
        assert component["valueQuantity"]["code"] == "1"
        source = obs["derivedFrom"][0]["reference"].removeprefix("urn:uuid:")
        if source in selections:
            (instance,) = selections[source]["instance"]
            by_image[instance["uid"]] = obs
    assert set(by_image) == {f.sop_instance_uid for f in FINDINGS}
    for finding in FINDINGS:
        obs = by_image[finding.sop_instance_uid]
        assert obs["component"][0]["valueQuantity"]["value"] == finding.prob_pneumonia
        present = ("http://snomed.info/sct", "52101004" if finding.present else "272519000")
        assert codes(obs["valueCodeableConcept"]) == {present}
    (study_obs,) = [o for o in observations.values() if o not in by_image.values()]
    assert study_obs["component"][0]["valueQuantity"]["value"] == 0.91  # the maximum over the images
    assert codes(study_obs["valueCodeableConcept"]) == {("http://snomed.info/sct", "52101004")}
    assert codes(study_obs["method"]) == {("http://snomed.info/sct", "56851009")}


def test_ids_are_derived_from_study_model_operating_point_and_images():
    first = build_study_bundle(STUDY, FINDINGS, **KW, issued=WHEN)
    later = build_study_bundle(STUDY, FINDINGS[::-1], **KW, issued=WHEN + dt.timedelta(days=3))

    def ids(bundle: dict[str, Any]) -> set[str]:
        return {e["resource"]["id"] for e in bundle["entry"]} | {bundle["id"]}

    assert ids(first) == ids(later)  # a rerun (images in any order) updates the same resources
    without_issued = json.dumps(first).replace("2026-12-01T09:30:00+00:00", "")
    assert sorted(without_issued) == sorted(json.dumps(later).replace("2026-12-04T09:30:00+00:00", ""))
    site = "site north-wing: youden on n=9 (2026-12-01)"
    sited = build_study_bundle(STUDY, FINDINGS, **KW, operating_point=site, issued=WHEN)
    assert not ids(sited) & ids(first) - {r["id"] for r in resources(first, "ImagingSelection")}
    (report,) = resources(sited, "DiagnosticReport")
    sr_uid = result_uids("sr", STUDY, result_version("0.3.0", site), [f.sop_instance_uid for f in FINDINGS])[
        1
    ]
    assert report["identifier"][0]["value"] == f"urn:oid:{sr_uid}"
    (device,) = resources(sited, "Device")
    assert f"operating point={site}" in [p["valueString"] for p in device["property"]]
    Bundle.model_validate(sited)


def test_three_class_probabilities_are_components():
    finding = ImageFinding("1.2.3.4", CR, 0.9, True, prob_normal=0.1, prob_bacterial=0.6, prob_viral=0.3)
    bundle = build_study_bundle(STUDY, [finding], **KW, issued=WHEN)
    Bundle.model_validate(bundle)
    components = {
        c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"]
        for o in resources(bundle, "Observation")
        if "method" not in o
        for c in o["component"]
    }
    assert components == {"PNEUMONIA-PROB": 0.9, "NORMAL-PROB": 0.1, "BACTERIAL-PROB": 0.6, "VIRAL-PROB": 0.3}


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="non-empty sequence"):
        build_study_bundle(STUDY, [], **KW)
    with pytest.raises(ValueError, match="more than once"):
        build_study_bundle(STUDY, [FINDINGS[0], FINDINGS[0]], **KW)
    with pytest.raises(ValueError, match="study_uid"):
        build_study_bundle("not a uid", FINDINGS, **KW)
    with pytest.raises(ValueError, match="threshold"):
        build_study_bundle(STUDY, FINDINGS, **{**KW, "threshold": 1.2})
    with pytest.raises(ValueError, match="time zone"):
        build_study_bundle(STUDY, FINDINGS, **KW, issued=dt.datetime(2026, 1, 1))


def test_an_image_outside_the_intended_use_carries_the_srs_note():
    outside = ImageFinding("1.2.3.4", CR, 0.9, True, intended_use="no")
    inside = ImageFinding("1.2.3.5", CR, 0.2, False, intended_use="yes")
    bundle = build_study_bundle(
        STUDY, [outside, inside], **KW, issued=WHEN, intended_use="patient age 1 to 5 years"
    )
    Bundle.model_validate(bundle)
    notes = [o.get("note") for o in resources(bundle, "Observation") if "method" not in o]
    assert notes == [
        [{"text": intended_use_note(image_group_identifier(1), "patient age 1 to 5 years")}],
        None,
    ]
    assert "outside the intended use" in notes[0][0]["text"] and "1 to 5 years" in notes[0][0]["text"]
