"""infer end to end: Secondary Capture chest films scored, intended use flagged in rows and SRs, no age."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.sr.utils import find_content_items
from infer_helpers import SMALL_NET, chest, film, write_bundle
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import SecondaryCaptureImageStorage
from sr_checks import assert_air_displayable, assert_valid

from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.sr import OUTSIDE_INTENDED_USE
from pneumonia_monai.inference.bundle import load_bundle
from pneumonia_monai.inference.manifest import read_results_csv
from pneumonia_monai.inference.runner import run_inference

STUDY_SIIM = "1.2.826.0.1.3680043.8.498.2001"
STUDY_CHILD = "1.2.826.0.1.3680043.8.498.2002"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle", network_def=SMALL_NET)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    # shaped like the SIIM-ACR films: Secondary Capture, Modality CR, chest PA, Patient's Age 062Y
    chest(
        root / "siim/sc.dcm",
        0,
        STUDY_SIIM,
        sop_class=SecondaryCaptureImageStorage,
        ConversionType="WSD",
        PatientAge="062Y",
    )
    chest(root / "child/pa.dcm", 1, STUDY_CHILD, PatientAge="003Y")
    (root / "rg1").mkdir()
    shutil.copy(get_testdata_file("RG1_UNCI.dcm"), root / "rg1" / "RG1_UNCI.dcm")  # born 1940, studied 2004
    Image.fromarray(film(2, 96, 8).astype(np.uint8)).save(root / "kaggle.jpeg", quality=95)
    return root


def test_secondary_capture_scored_and_intended_use_flagged(
    bundle_dir: Path, inputs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        summary = run_inference([inputs], out, bundle=bundle_dir, workers=0, progress=False)
    assert summary.exit_code == 0
    rows = {row["path"]: row for row in read_results_csv(out / "results.csv")}
    assert set(rows) == {"siim/sc.dcm", "child/pa.dcm", "rg1/RG1_UNCI.dcm", "kaggle.jpeg"}
    siim = rows["siim/sc.dcm"]
    assert siim["status"] == "ok" and siim["prob_pneumonia"]  # scored
    assert siim["reason"] == (
        "secondary capture chest frontal (Modality=CR; BodyPartExamined=CHEST; ViewPosition=PA)"
    )
    assert {path: row["intended_use"] for path, row in rows.items()} == {
        "siim/sc.dcm": "no",  # from Patient's Age
        "child/pa.dcm": "yes",
        "rg1/RG1_UNCI.dcm": "no",  # from Patient's Birth Date and Study Date
        "kaggle.jpeg": "unknown",
    }
    json_rows = {row["path"]: row for row in json.loads((out / "results.json").read_text(encoding="utf-8"))}
    assert {path: row["intended_use"] for path, row in json_rows.items()} == {
        path: row["intended_use"] for path, row in rows.items()
    }

    # The age (and the birth date it came from) is in no result file and no log line.
    birth_date = pydicom.dcmread(inputs / "rg1/RG1_UNCI.dcm", stop_before_pixels=True).PatientBirthDate
    texts = [
        (out / name).read_text(encoding="utf-8") for name in ("results.csv", "results.json", "studies.csv")
    ]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for value in ("062Y", "003Y", birth_date):
            assert value not in text

    # The SR of the SIIM-like study says the film is outside the intended use; the child's does not.
    siim_path = out / "sr" / f"{STUDY_SIIM}.dcm"
    report = hd.sr.srread(siim_path)
    assert_valid(siim_path)
    bundle = load_bundle(bundle_dir, device="cpu")
    algorithm = {"algorithm_name": bundle.model_name, "algorithm_version": bundle.model_version}
    assert_air_displayable(
        report, [pydicom.dcmread(inputs / "siim/sc.dcm", stop_before_pixels=True)], algorithm
    )
    (note,) = find_content_items(report, name=OUTSIDE_INTENDED_USE, recursive=True)
    assert note.TextValue.startswith("pneumonia image 1: outside the intended use of the model")
    assert "patient age 1 to 5 years" in note.TextValue
    child = hd.sr.srread(out / "sr" / f"{STUDY_CHILD}.dcm")
    assert find_content_items(child, name=OUTSIDE_INTENDED_USE, recursive=True) == []
    rg1 = hd.sr.srread(next(p for p in (out / "sr").iterdir() if p.name.startswith("1.3.6.1.4.1.5962")))
    assert len(find_content_items(rg1, name=OUTSIDE_INTENDED_USE, recursive=True)) == 1


def test_outside_intended_use_skip_policy(bundle_dir: Path, inputs: Path, tmp_path: Path) -> None:
    rules = SelectionRules.from_mapping({"outside_intended_use": "skip"}, base=SelectionRules.default())
    out = tmp_path / "out"
    run_inference([inputs / "siim", inputs / "child"], out, bundle=bundle_dir, workers=0, rules=rules)
    rows = {row["path"]: row for row in read_results_csv(out / "results.csv")}
    assert (rows["sc.dcm"]["status"], rows["sc.dcm"]["intended_use"], rows["sc.dcm"]["prob_pneumonia"]) == (
        "skipped",
        "no",
        "",
    )
    assert rows["sc.dcm"]["reason"].startswith("outside the intended use (outside patient age 1 to 5 years")
    assert (rows["pa.dcm"]["status"], rows["pa.dcm"]["intended_use"]) == ("ok", "yes")
    assert not (out / "sr" / f"{STUDY_SIIM}.dcm").exists()
