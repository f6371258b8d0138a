"""Selecting chest frontal CR/DX films from a messy DICOM folder: one decision per file, with a reason."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from dicom_factory import code, make_cr, make_dx, make_presentation_state, make_sr
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DigitalXRayImageStorageForProcessing,
    JPEG2000Lossless,
    KeyObjectSelectionDocumentStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from repo_paths import REPO, SAMPLE_TREE

from pneumonia_monai.cli import select as select_cli
from pneumonia_monai.dicom.header import TruncatedDicomError, read_header
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.dicom.selection import DECISION_COLUMNS
from pneumonia_monai.triage import select_files

SAMPLE = SAMPLE_TREE
DEFAULT_RULES_TEXT = (REPO / "pneumonia_monai/dicom/selection_rules.yaml").read_text(encoding="utf-8")

# relative path -> (status, exact reason)
EXPECTED: dict[str, tuple[str, str]] = {
    "DICOMDIR": ("skipped", "DICOMDIR (Media Storage SOP Class Media Storage Directory Storage)"),
    "a/abdomen.dcm": ("skipped", "not chest (BodyPartExamined=ABDOMEN)"),
    "a/ap_dx.dcm": ("selected", "DX chest frontal (BodyPartExamined=CHEST; ViewPosition=AP)"),
    "a/chest_by_region_code.dcm": (
        "selected",
        "CR chest frontal (Anatomic Region Sequence=SCT 816094009 Chest; ViewPosition=PA)",
    ),
    "a/chest_by_keyword.dcm": (
        "selected",
        "CR chest frontal (keyword CHEST in StudyDescription; ViewPosition=PA)",
    ),
    "a/chest_pa_cr.dcm": ("selected", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
    "a/chest_pa_j2k.dcm": ("selected", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
    "a/chest_pa_rle_implicit_name": (
        "selected",
        "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)",
    ),
    "a/dx_for_processing.dcm": ("skipped", "DX For Processing (Presentation Intent Type=FOR PROCESSING)"),
    "a/dx_processing_class.dcm": (
        "skipped",
        "DX For Processing (SOP Class Digital X-Ray Image Storage - For Processing)",
    ),
    "a/empty_pixel_data.dcm": ("skipped", "no Pixel Data (7FE0,0010)"),
    "a/extremity_region_code.dcm": ("skipped", "not chest (Anatomic Region Sequence=SCT 66019005 Extremity)"),
    "a/gsps.dcm": ("skipped", "presentation state (SOP Class Grayscale Softcopy Presentation State Storage)"),
    "a/kos.dcm": ("skipped", "key object selection (SOP Class Key Object Selection Document Storage)"),
    "a/lateral_ll.dcm": ("skipped", "lateral view (ViewPosition=LL)"),
    "a/lateral_by_view_code.dcm": ("skipped", "lateral view (View Code Sequence=SCT 399173006 left lateral)"),
    "a/no_body_part.dcm": (
        "skipped",
        "body part unknown (no BodyPartExamined, no Anatomic Region Sequence, no chest keyword in "
        "StudyDescription/SeriesDescription/ProtocolName)",
    ),
    "a/no_pixel_data.dcm": ("skipped", "no Pixel Data (7FE0,0010)"),
    "a/no_view.dcm": (
        "selected",
        "CR chest frontal (BodyPartExamined=CHEST; view unknown (no ViewPosition, no View Code Sequence, "
        "no unambiguous view keyword), assumed frontal)",
    ),
    "a/oblique.dcm": ("skipped", "not a frontal view (ViewPosition=RLO)"),
    "a/our_result_sc.dcm": ("skipped", "our own output (Manufacturer=pneumonia_monai)"),
    "a/our_result_sr.dcm": ("skipped", "our own output (SeriesDescription starts with pneumonia_monai)"),
    "a/pa_by_view_code.dcm": (
        "selected",
        "CR chest frontal (BodyPartExamined=CHEST; View Code Sequence=SCT 272479007 postero-anterior)",
    ),
    "a/report_sr.dcm": ("skipped", "structured report (SOP Class Basic Text SR Storage)"),
    "a/secondary_capture.dcm": (
        "skipped",
        "secondary capture not of a radiograph (Modality=OT, ConversionType=-; "
        "kept: Modality CR/Modality DX/ConversionType DF)",
    ),
    "b/IM000017": ("selected", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
    "b/bare_dataset.dcm": ("selected", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
    "b/pydicom_no_meta.dcm": (
        "skipped",
        "not a CR/DX image (SOP Class RT Ion Plan Storage, Modality=RTPLAN)",
    ),
    "b/truncated.dcm": ("error", "truncated file (Pixel Data ends at byte {end}, file has {size})"),
    "junk/empty.dcm": ("skipped", "zero-byte file"),
    "junk/notes.txt": ("skipped", "not a DICOM file (no DICM prefix at byte 128, no data set at byte 0)"),
    "junk/photo.dcm": ("skipped", "not a DICOM file (JPEG image)"),
    "z_copy_of_chest_pa.dcm": ("skipped", "duplicate SOP Instance UID of a/chest_pa_cr.dcm"),
}

PHI = ("Factory^Synthetic", "SYNTH-0001", "ACC0001", "20240102")


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    a, b, junk = root / "a", root / "b", root / "junk"
    make_cr(a / "chest_pa_cr.dcm")
    make_dx(a / "ap_dx.dcm", view="AP")
    make_cr(a / "lateral_ll.dcm", view="LL")
    make_cr(a / "oblique.dcm", view="RLO")
    make_cr(
        a / "lateral_by_view_code.dcm", view=None, ViewCodeSequence=[code("SCT", "399173006", "left lateral")]
    )
    make_cr(
        a / "pa_by_view_code.dcm", view=None, ViewCodeSequence=[code("SCT", "272479007", "postero-anterior")]
    )
    make_cr(a / "no_view.dcm", view=None)
    make_cr(
        a / "chest_by_region_code.dcm",
        body_part=None,
        AnatomicRegionSequence=[code("SCT", "816094009", "Chest")],
    )
    make_cr(
        a / "extremity_region_code.dcm",
        body_part=None,
        AnatomicRegionSequence=[code("SCT", "66019005", "Extremity")],
    )
    make_cr(a / "chest_by_keyword.dcm", body_part=None, StudyDescription="XR Chest 1 view")
    make_cr(a / "no_body_part.dcm", body_part=None, StudyDescription="XR 1 view (Chester clinic)")
    make_cr(a / "abdomen.dcm", body_part="ABDOMEN")
    make_dx(a / "dx_for_processing.dcm", presentation_intent="FOR PROCESSING")
    make_dx(a / "dx_processing_class.dcm", sop_class=DigitalXRayImageStorageForProcessing)
    make_cr(a / "no_pixel_data.dcm", PixelData=None)
    make_cr(a / "empty_pixel_data.dcm", PixelData=b"")
    make_cr(a / "chest_pa_j2k.dcm", transfer_syntax=JPEG2000Lossless)
    make_cr(a / "chest_pa_rle_implicit_name", transfer_syntax=RLELossless)
    make_cr(a / "secondary_capture.dcm", modality="OT")
    make_cr(a / "our_result_sc.dcm", modality="OT", Manufacturer="pneumonia_monai")
    make_sr(a / "report_sr.dcm")
    make_sr(a / "our_result_sr.dcm", SeriesDescription="pneumonia_monai AI result")
    make_sr(a / "kos.dcm", sop_class=KeyObjectSelectionDocumentStorage, Modality="KO")
    make_presentation_state(a / "gsps.dcm")
    make_cr(b / "IM000017")
    make_cr(b / "bare_dataset.dcm", preamble=False)
    make_cr(b / "whole.dcm")
    data = (b / "whole.dcm").read_bytes()
    (b / "whole.dcm").unlink()
    (b / "truncated.dcm").write_bytes(data[:-100])
    shutil.copy(get_testdata_file("ExplVR_LitEndNoMeta.dcm"), b / "pydicom_no_meta.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    shutil.copy(a / "chest_pa_cr.dcm", root / "z_copy_of_chest_pa.dcm")
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image\n", encoding="utf-8")
    (junk / "empty.dcm").write_bytes(b"")
    shutil.copy(SAMPLE / "train/NORMAL/IM-0236-0001.jpeg", junk / "photo.dcm")
    return root


def _files(root: Path) -> list[str]:
    return sorted(
        (Path(folder) / name).relative_to(root).as_posix()
        for folder, _, names in os.walk(root)
        for name in names
    )


def test_every_file_gets_its_exact_status_and_reason(messy: Path) -> None:
    result = select_files([messy])
    files = _files(messy)
    assert len(result.decisions) == len(files) == len(EXPECTED)
    size = (messy / "b/truncated.dcm").stat().st_size
    got = {d.relative_path: (d.status, d.reason) for d in result.decisions}
    expected = {
        k: (status, reason.format(end=size + 100, size=size)) for k, (status, reason) in EXPECTED.items()
    }
    assert got == expected
    # a stable order: sorted by path within the input, whatever the file system returns
    assert [d.relative_path for d in result.decisions] == sorted(got, key=lambda p: Path(p).parts)
    assert result.counts() == {"selected": 10, "skipped": 22, "error": 1}


def test_decisions_carry_uids_but_no_phi(messy: Path) -> None:
    result = select_files([messy])
    by_path = {d.relative_path: d for d in result.decisions}
    pa = by_path["a/chest_pa_cr.dcm"]
    assert (pa.modality, pa.body_part, pa.view) == ("CR", "CHEST", "PA")
    assert pa.sop_class == "1.2.840.10008.5.1.4.1.1.1"
    assert pa.sop_uid and pa.study_uid and pa.series_uid
    assert by_path["z_copy_of_chest_pa.dcm"].sop_uid == pa.sop_uid
    assert by_path["junk/notes.txt"].sop_uid == ""
    for decision in result.decisions:
        row = decision.as_row()
        assert tuple(row) == DECISION_COLUMNS
        assert not any(phi in value for phi in PHI for value in row.values())


def test_studies_group_selected_instances(tmp_path: Path) -> None:
    first = make_cr(tmp_path / "s1" / "1.dcm")
    make_cr(
        tmp_path / "s1" / "2.dcm",
        StudyInstanceUID=first.StudyInstanceUID,
        SeriesInstanceUID=first.SeriesInstanceUID,
    )
    make_cr(tmp_path / "s1" / "3.dcm", StudyInstanceUID=first.StudyInstanceUID)
    make_cr(tmp_path / "s1" / "4_lateral.dcm", StudyInstanceUID=first.StudyInstanceUID, view="LL")
    other = make_dx(tmp_path / "s2" / "1.dcm")
    studies = select_files([tmp_path]).studies()
    assert list(studies) == [first.StudyInstanceUID, other.StudyInstanceUID]
    series = studies[first.StudyInstanceUID]
    assert len(series) == 2
    assert [d.path.name for d in series[first.SeriesInstanceUID]] == ["1.dcm", "2.dcm"]
    assert sum(len(v) for v in series.values()) == 3


def test_header_read_leaves_pixel_data_unread(tmp_path: Path) -> None:
    make_cr(tmp_path / "pa.dcm", transfer_syntax=JPEG2000Lossless)
    header = read_header(tmp_path / "pa.dcm", ["SOPClassUID", "Modality"])
    assert header.has_pixel_data and header.has_preamble
    assert "PixelData" not in header.dataset
    assert "PatientName" not in header.dataset  # only the attributes asked for
    make_cr(tmp_path / "cut.dcm")
    data = (tmp_path / "cut.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-1])
    with pytest.raises(TruncatedDicomError, match="Pixel Data ends"):
        read_header(tmp_path / "cut.dcm")


def test_pydicom_data_rg1_chest_selected_rg3_extremity_skipped() -> None:
    rg1 = get_testdata_file("RG1_UNCI.dcm")
    rg3 = get_testdata_file("RG3_UNCI.dcm")
    assert rg1 is not None and rg3 is not None, "pydicom-data (test extra) must be installed"
    result = select_files([rg1, rg3])
    assert [(d.status, d.reason) for d in result.decisions] == [
        ("selected", "CR chest frontal (BodyPartExamined=CHEST; ViewPosition=PA)"),
        ("skipped", "not chest (BodyPartExamined=EXTREMITY)"),
    ]


def test_site_rules_accepting_abdomen_change_the_decision(messy: Path, tmp_path: Path) -> None:
    assert "body_parts: [CHEST, THORAX]" in DEFAULT_RULES_TEXT
    site = tmp_path / "site.yaml"
    site.write_text(
        DEFAULT_RULES_TEXT.replace("body_parts: [CHEST, THORAX]", "body_parts: [CHEST, THORAX, ABDOMEN]"),
        encoding="utf-8",
    )
    rules = SelectionRules.from_file(site)
    assert rules.body_parts == ("CHEST", "THORAX", "ABDOMEN")
    decision = select_files([messy / "a/abdomen.dcm"], rules).decisions[0]
    assert (decision.status, decision.reason) == (
        "selected",
        "CR chest frontal (BodyPartExamined=ABDOMEN; ViewPosition=PA)",
    )
    default = select_files([messy / "a/abdomen.dcm"]).decisions[0]
    assert default.status == "skipped"


def test_site_rules_partial_file_and_policies(messy: Path, tmp_path: Path) -> None:
    site = tmp_path / "partial.yaml"
    site.write_text("unknown_view: skip\nsecondary_capture_modalities: [CR, DX, OT]\n", encoding="utf-8")
    rules = SelectionRules.from_file(site)
    assert rules.body_parts == SelectionRules.default().body_parts
    result = select_files([messy / "a/no_view.dcm", messy / "a/secondary_capture.dcm"], rules)
    assert [(d.status, d.reason) for d in result.decisions] == [
        (
            "skipped",
            "view unknown (no ViewPosition, no View Code Sequence, no unambiguous view keyword)",
        ),
        (
            "selected",
            "secondary capture chest frontal (Modality=OT; BodyPartExamined=CHEST; ViewPosition=PA)",
        ),
    ]


def siim_like(path: Path, **overrides: object) -> Path:
    """A film shaped like the SIIM-ACR ones: Secondary Capture, Modality CR, chest PA, Patient's Age 062Y."""
    values = {"ConversionType": "WSD", "PatientAge": "062Y", **overrides}
    make_cr(path, modality="CR", sop_class=SecondaryCaptureImageStorage, **values)
    return path


def test_secondary_capture_chest_films_are_kept_by_default_and_say_so(tmp_path: Path) -> None:
    siim = siim_like(tmp_path / "siim.dcm")
    dx = siim_like(tmp_path / "sc_dx.dcm", Modality="DX", PatientAge=None)
    scanned = siim_like(tmp_path / "scanned.dcm", Modality="OT", ConversionType="DF")
    screenshot = siim_like(tmp_path / "screenshot.dcm", Modality="OT", ConversionType="WSD")
    lateral = siim_like(tmp_path / "sc_lateral.dcm", ViewPosition="LL")
    hand = siim_like(tmp_path / "sc_hand.dcm", BodyPartExamined="HAND")
    result = select_files([siim, dx, scanned, screenshot, lateral, hand])
    got = {d.path.name: (d.status, d.reason) for d in result.decisions}
    assert got == {
        "siim.dcm": (
            "selected",
            "secondary capture chest frontal (Modality=CR; BodyPartExamined=CHEST; ViewPosition=PA)",
        ),
        "sc_dx.dcm": (
            "selected",
            "secondary capture chest frontal (Modality=DX; BodyPartExamined=CHEST; ViewPosition=PA)",
        ),
        "scanned.dcm": (
            "selected",
            "secondary capture chest frontal (ConversionType=DF; BodyPartExamined=CHEST; ViewPosition=PA)",
        ),
        "screenshot.dcm": (
            "skipped",
            "secondary capture not of a radiograph (Modality=OT, ConversionType=WSD; "
            "kept: Modality CR/Modality DX/ConversionType DF)",
        ),
        "sc_lateral.dcm": ("skipped", "lateral view (ViewPosition=LL)"),
        "sc_hand.dcm": ("skipped", "not chest (BodyPartExamined=HAND)"),
    }
    decisions = {d.path.name: d for d in result.decisions}
    assert decisions["siim.dcm"].intended_use == "no"  # 62 years: outside 1 to 5
    assert decisions["sc_dx.dcm"].intended_use == "unknown"  # no age, no birth date
    assert decisions["screenshot.dcm"].intended_use == ""  # not selected: not assessed
    row = decisions["siim.dcm"].as_row()
    assert row["intended_use"] == "no"
    # the age is in no cell; the UID cells are left out of the digit search (a random UID may hold "062")
    assert not any("062Y" in value for value in row.values())
    assert not any("062" in value for column, value in row.items() if not column.endswith("_uid"))


def test_secondary_capture_can_be_switched_off(tmp_path: Path) -> None:
    siim = siim_like(tmp_path / "siim.dcm")
    site = tmp_path / "site.yaml"
    site.write_text("accept_secondary_capture: false\n", encoding="utf-8")
    decision = select_files([siim], SelectionRules.from_file(site)).decisions[0]
    assert (decision.status, decision.reason) == (
        "skipped",
        "secondary capture not accepted (SOP Class Secondary Capture Image Storage)",
    )
    assert "accept_secondary_capture: true" in DEFAULT_RULES_TEXT


def test_outside_intended_use_can_skip_instead_of_flag(tmp_path: Path) -> None:
    siim = siim_like(tmp_path / "siim.dcm")
    child = siim_like(tmp_path / "child.dcm", PatientAge="003Y")
    site = tmp_path / "site.yaml"
    site.write_text("outside_intended_use: skip\n", encoding="utf-8")
    result = select_files([siim, child], SelectionRules.from_file(site))
    got = {d.path.name: (d.status, d.reason, d.intended_use) for d in result.decisions}
    assert got == {
        "siim.dcm": (
            "skipped",
            "outside the intended use (outside patient age 1 to 5 years (from Patient's Age (0010,1010)))",
            "no",
        ),
        "child.dcm": (
            "selected",
            "secondary capture chest frontal (Modality=CR; BodyPartExamined=CHEST; ViewPosition=PA)",
            "yes",
        ),
    }
    # a site widens the range: the same film is in it
    site.write_text("intended_age_min_years: 0\nintended_age_max_years: 120\n", encoding="utf-8")
    assert select_files([siim], SelectionRules.from_file(site)).decisions[0].intended_use == "yes"


def test_rg1_is_flagged_from_its_birth_and_study_dates() -> None:
    rg1 = get_testdata_file("RG1_UNCI.dcm")
    decision = select_files([rg1]).decisions[0]
    assert decision.status == "selected"
    assert decision.intended_use == "no"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("body_part: [CHEST]\n", ValueError, "unknown key 'body_part'"),
        ("outside_intended_use: warn\n", ValueError, "'outside_intended_use' must be one of"),
        ("intended_age_min_years: 6\n", ValueError, "is above max_years"),
        ("intended_age_max_years: 5.5\n", TypeError, "'intended_age_max_years' must be a whole number"),
        ("intended_age_max_years: 200\n", ValueError, "max_years must be in [0, 150], got 200"),
        (
            "secondary_capture_modalities: []\nsecondary_capture_conversion_types: []\n",
            ValueError,
            "no secondary capture can be kept",
        ),
        ("unknown_view: maybe\n", ValueError, "'unknown_view' must be one of"),
        ("frontal_view_codes: [272479007]\n", ValueError, "holds 272479007, expected 'SCHEME:VALUE'"),
        ("modalities: [CT]\n", ValueError, "modality 'CT'"),
        ("body_parts: CHEST\n", TypeError, "'body_parts' must be a list"),
        ("own_output_markers: [{attribute: Maker, equals: x}]\n", ValueError, "'Maker'"),
        ("lateral_views: [PA]\n", ValueError, "both frontal and lateral"),
        ("[1, 2]\n", TypeError, "must be a mapping"),
    ],
)
def test_bad_rules_are_rejected_naming_the_problem(
    tmp_path: Path, text: str, error: type[Exception], message: str
) -> None:
    site = tmp_path / "bad.yaml"
    site.write_text(text, encoding="utf-8")
    with pytest.raises(error, match=message.replace("[", r"\[")):
        SelectionRules.from_file(site)


def test_default_rules_file_is_complete_and_valid() -> None:
    rules = SelectionRules.default()
    assert rules.modalities == ("CR", "DX")
    assert ("SCT", "272479007") in rules.frontal_view_codes  # postero-anterior
    assert ("SCT", "399348003") in rules.frontal_view_codes  # antero-posterior
    assert {("SCT", "399198007"), ("SCT", "399173006")} <= set(rules.lateral_view_codes)
    assert rules.unknown_view == "keep" and rules.unknown_body_part == "skip"


def test_cli_writes_one_row_per_file_without_phi(messy: Path, tmp_path: Path) -> None:
    out = tmp_path / "decisions.csv"
    status = select_cli.main([str(messy), "--output", str(out), "-q"])
    assert status == 1  # the truncated file is an error
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == len(_files(messy))
    assert {r["path"]: r["status"] for r in rows} == {k: v[0] for k, v in EXPECTED.items()}
    text = out.read_text(encoding="utf-8")
    assert not any(phi in text for phi in PHI)
    assert not list(tmp_path.glob(".decisions.csv.*"))  # no temporary left behind


def test_cli_exit_codes(messy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert select_cli.main([str(messy / "a"), "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == ",".join(DECISION_COLUMNS)
    assert len(printed) == 1 + len(_files(messy / "a"))
    assert select_cli.main([str(tmp_path / "missing"), "-q"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: blue\n", encoding="utf-8")
    assert select_cli.main([str(messy / "a"), "--rules", str(bad), "-q"]) == 2
