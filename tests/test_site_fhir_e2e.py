"""End to end: converted DICOM + labels -> infer -> evaluate --choose-threshold -> infer --site --fhir.

Real films (the committed Kermany sample) are converted to DICOM with ``convert kaggle-to-dicom``. The
"site" labels one normal film pneumonia (a site whose labels disagree with Kaggle's): the highest
specificity keeping sensitivity 1 then needs a threshold at that film's probability, below the
bundle's, and exactly the films between the two thresholds change their call. The node's processor
and ``serve`` take the same overlay, and refuse one of another model version.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fhir.resources.bundle import Bundle

from pneumonia_monai.cli import convert as convert_cli
from pneumonia_monai.cli import evaluate as evaluate_cli
from pneumonia_monai.cli import infer as infer_cli
from pneumonia_monai.cli import serve as serve_cli
from pneumonia_monai.inference import bundle as bundle_module
from pneumonia_monai.inference.bundle import InferenceBundle, load_bundle
from pneumonia_monai.inference.manifest import read_results_csv
from pneumonia_monai.inference.runner import run_inference
from pneumonia_monai.node.processor import InferenceProcessor
from pneumonia_monai.site_overlay import SiteOverlayError, read_site_overlay, write_site_overlay

RULE = "max-specificity@sensitivity>=1"


@pytest.fixture(scope="module")
def loaded() -> InferenceBundle:
    return load_bundle(device="cpu")


@pytest.fixture(scope="module")
def site_run(tmp_path_factory: pytest.TempPathFactory, sample_tree: Path, loaded: InferenceBundle) -> dict:
    """Convert 5 real films, score them, choose the site threshold, score them again with it."""
    base = tmp_path_factory.mktemp("site")
    src = base / "kaggle"
    for label, count in (("NORMAL", 3), ("PNEUMONIA", 2)):
        (src / "train" / label).mkdir(parents=True)
        for film in sorted((sample_tree / "train" / label).glob("*.jpeg"))[:count]:
            shutil.copy2(film, src / "train" / label / film.name)
    dicom = base / "dicom"
    assert convert_cli.main(["kaggle-to-dicom", str(src), str(dicom), "-q"]) == 0
    first = run_inference([dicom], base / "bundle_run", bundle=loaded, workers=0, progress=False)
    assert first.counts["ok"] == 5
    rows = {row["path"]: row for row in read_results_csv(first.results_csv) if row["status"] == "ok"}

    items = json.loads((dicom / "datalist.json").read_text(encoding="utf-8"))["training"]
    normals = sorted(
        (i for i in items if i["label"] == 0), key=lambda i: float(rows[i["image"]]["prob_pneumonia"])
    )
    disputed = normals[-1]["image"]  # the normal film the model finds likeliest pneumonia
    disputed_prob = float(rows[disputed]["prob_pneumonia"])
    pneumonia_probs = [float(rows[i["image"]]["prob_pneumonia"]) for i in items if i["label"] == 1]
    # Preconditions of the scenario (the shipped model on these films): the disputed film is called
    # normal at the bundle's threshold and is below every pneumonia film.
    assert disputed_prob < loaded.threshold and disputed_prob < min(pneumonia_probs)
    labels = base / "site_labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "patient_id"])
        for item in items:
            label = "pneumonia" if item["image"] == disputed or item["label"] == 1 else "normal"
            writer.writerow([item["image"], label, item["patient_id"]])

    report = base / "report"
    argv = ["--results", str(first.results_csv), "--labels", str(labels), "--root", str(dicom)]
    argv += ["--output", str(report), "--bootstrap", "0", "--choose-threshold", RULE]
    assert evaluate_cli.main([*argv, "--site-name", "north-wing", "-q"]) == 0
    overlay = report / "site_operating_point.json"
    point = read_site_overlay(overlay)

    second = base / "site_run"
    infer = [str(dicom), "--output", str(second), "--site", str(overlay), "--fhir", "--workers", "0", "-q"]
    assert infer_cli.main(infer) == 0
    return {
        "dicom": dicom,
        "first": first,
        "second": second,
        "overlay": overlay,
        "point": point,
        "disputed": disputed,
        "disputed_prob": disputed_prob,
        "report": report,
    }


def test_evaluate_writes_the_overlay_it_chose(site_run: dict, loaded: InferenceBundle):
    point = site_run["point"]
    assert point.threshold == site_run["disputed_prob"]  # sensitivity 1 needs the disputed film
    assert (point.site, point.rule, point.model_version) == ("north-wing", RULE, loaded.model_version)
    assert (point.n, point.n_pneumonia, point.n_normal, point.sensitivity) == (5, 3, 2, 1.0)
    assert point.specificity == 1.0  # both remaining normals lie below it
    metrics = json.loads((site_run["report"] / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["extra"]["site_operating_point"] == point.as_dict()


def test_infer_site_calls_every_film_at_the_overlay_threshold(site_run: dict, loaded: InferenceBundle):
    point = site_run["point"]
    before = {r["path"]: r for r in read_results_csv(site_run["first"].results_csv)}
    after = {r["path"]: r for r in read_results_csv(site_run["second"] / "results.csv")}
    assert set(before) == set(after)
    flipped = set()
    for path, row in after.items():
        assert row["operating_point"] == point.label  # every row, skipped ones too
        assert float(row["threshold"]) == point.threshold
        assert before[path]["operating_point"] == "bundle"
        if row["status"] != "ok":
            continue
        prob = float(row["prob_pneumonia"])
        assert prob == float(before[path]["prob_pneumonia"])  # same model, same probabilities
        assert row["prediction"] == ("pneumonia" if prob >= point.threshold else "normal")
        if row["prediction"] != before[path]["prediction"]:
            flipped.add(path)
    assert flipped == {site_run["disputed"]}  # exactly the film between the two thresholds
    assert after[site_run["disputed"]]["prediction"] == "pneumonia"
    assert before[site_run["disputed"]]["prediction"] == "normal"


def _parameters(ds: pydicom.Dataset) -> list[str]:
    found = []
    for item in ds.get("ContentSequence", []):
        code = item.get("ConceptNameCodeSequence")
        if code and code[0].CodeValue == "111002" and item.ValueType == "TEXT":
            found.append(str(item.TextValue))
        found += _parameters(item)
    return found


def test_sr_and_fhir_record_the_site_operating_point(site_run: dict):
    point, second = site_run["point"], site_run["second"]
    studies = [row for row in read_results_csv(second / "studies.csv") if int(row["n_images"])]
    assert studies
    first_srs = {p.stem: pydicom.dcmread(p).SOPInstanceUID for p in site_run["first"].sr_paths}
    for study in studies:
        uid = study["study_uid"]
        assert study["operating_point"] == point.label  # studies.csv says it too
        sr = pydicom.dcmread(second / "sr" / f"{uid}.dcm")
        parameters = _parameters(sr)
        assert f"operating point={point.label}" in parameters
        assert f"decision threshold on the probability of pneumonia={point.threshold!r}" in parameters
        assert sr.SOPInstanceUID != first_srs[uid]  # another operating point: another object
        text = (second / "fhir" / f"{uid}.json").read_text(encoding="utf-8")
        bundle = Bundle.model_validate_json(text)
        (report,) = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "DiagnosticReport"]
        assert report.status == "preliminary"
        assert report.identifier[0].value == f"urn:oid:{sr.SOPInstanceUID}"  # the FHIR report is the SR's
        assert point.label in report.conclusion
        observations = [e.resource for e in bundle.entry if e.resource.get_resource_type() == "Observation"]
        assert len(observations) == int(study["n_images"]) + 1
        (study_obs,) = [o for o in observations if o.method is not None]
        present = study["prediction"] == "pneumonia"
        assert study_obs.valueCodeableConcept.coding[0].code == ("52101004" if present else "272519000")
        source = pydicom.dcmread(next((site_run["dicom"]).rglob(f"{uid}/*/*.dcm")), stop_before_pixels=True)
        for keyword in ("PatientID", "PatientName", "PatientBirthDate"):  # no patient value in the Bundle
            value = str(source.get(keyword) or "")
            assert not value or value not in text, keyword


def test_rerun_keeps_the_fhir_bundles_and_another_version_is_refused(
    site_run: dict, loaded: InferenceBundle, tmp_path: Path
):
    second, point = site_run["second"], site_run["point"]
    before = {p.name: p.read_bytes() for p in (second / "fhir").glob("*.json")}
    again = run_inference(
        [site_run["dicom"]], second, bundle=loaded, site=point, fhir=True, workers=0, progress=False
    )
    assert again.n_inferred == 0 and again.n_reused == sum(again.counts.values())  # resumed, nothing redone
    assert {p.name: p.read_bytes() for p in (second / "fhir").glob("*.json")} == before
    assert sorted(p.name for p in again.fhir_paths) == sorted(before)

    other = tmp_path / "other_version.json"
    write_site_overlay(other, dataclasses.replace(point, model_version="0.0.1"))
    with pytest.raises(SiteOverlayError, match=r"model version '0\.0\.1'"):
        run_inference([site_run["dicom"]], tmp_path / "refused", bundle=loaded, site=read_site_overlay(other))
    assert not (tmp_path / "refused" / "results.csv").exists()


def test_node_uses_the_overlay_and_writes_fhir(
    site_run: dict, loaded: InferenceBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(bundle_module, "load_bundle", lambda *args, **kwargs: loaded)  # one load per module
    point = site_run["point"]
    study_dir = next(p for p in site_run["dicom"].glob("*/*") if p.is_dir())
    processor = InferenceProcessor(site=point, fhir_dir=tmp_path / "fhir")
    (sr_path,) = processor.process(study_dir, tmp_path / "out")
    sr = pydicom.dcmread(sr_path)
    assert f"operating point={point.label}" in _parameters(sr)
    fhir: dict[str, Any] = json.loads(
        (tmp_path / "fhir" / f"{study_dir.name}.json").read_text(encoding="utf-8")
    )
    Bundle.model_validate(fhir)
    identifiers = [e["resource"].get("identifier") for e in fhir["entry"]]
    assert [{"system": "urn:dicom:uid", "value": f"urn:oid:{sr.SOPInstanceUID}"}] in identifiers

    other = tmp_path / "other_version.json"
    write_site_overlay(other, dataclasses.replace(point, model_version="0.0.1"))
    with pytest.raises(SiteOverlayError, match=r"0\.0\.1"):
        InferenceProcessor(site=read_site_overlay(other)).load()
    argv = ["--work-dir", str(tmp_path / "work"), "--dest-ae", "PACS@127.0.0.1:104", "--port", "0"]
    assert serve_cli.main([*argv, "--site", str(other), "-q"]) == 2  # refused before it listens
    assert serve_cli.main([*argv, "--site", str(tmp_path / "missing.json"), "-q"]) == 2


def test_node_configuration_takes_site_and_fhir_dir(tmp_path: Path):
    from pneumonia_monai.node.config import config_from_mapping, read_config_file

    path = tmp_path / "node.yaml"
    path.write_text("work_dir: spool\ndest_ae: PACS@127.0.0.1:104\nsite: site.json\nfhir_dir: out/fhir\n")
    config = config_from_mapping(read_config_file(path))
    assert (config.site, config.fhir_dir) == (
        tmp_path / "site.json",
        tmp_path / "out" / "fhir",
    )  # file-relative
    args = serve_cli.build_parser().parse_args(
        ["--config", str(path), "--site", "/x/o.json", "--fhir-dir", "f"]
    )
    merged = serve_cli.config_from_args(args)
    assert (merged.site, merged.fhir_dir) == (Path("/x/o.json"), Path("f"))  # the command line wins
    with pytest.raises(TypeError, match="site must be a path"):
        config_from_mapping({"work_dir": "w", "dest_ae": "PACS@127.0.0.1:104", "site": 3})
