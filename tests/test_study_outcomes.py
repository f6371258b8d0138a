"""The run summary's per-study outcome (RunSummary.studies) and the node's use of it."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from dicom_factory import make_cr
from infer_helpers import SMALL_NET, film, write_bundle
from pydicom.uid import generate_uid

from pneumonia_monai.inference.manifest import read_results_csv
from pneumonia_monai.inference.runner import run_inference
from pneumonia_monai.node.processor import InferenceProcessor, StudyProcessingError


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle", network_def=SMALL_NET)


def studies(root: Path, sample_images: list[Path]) -> dict[str, str]:
    """Three study folders named by their Study Instance UID, as the node's inbox holds them.

    ``good``: two frontal films; ``lateral``: a lateral film only (skipped); ``broken``: a file whose header
    cannot be read (no Study Instance UID known). A JPEG film lies beside them, in no study.
    """
    uids = {"good": generate_uid(), "lateral": generate_uid(), "broken": generate_uid()}
    for index in range(2):
        sop = generate_uid()
        make_cr(
            root / uids["good"] / f"{sop}.dcm",
            pixels=film(index, 128),
            StudyInstanceUID=uids["good"],
            SOPInstanceUID=sop,
        )
    sop = generate_uid()
    make_cr(
        root / uids["lateral"] / f"{sop}.dcm",
        pixels=film(2, 128),
        view="LL",
        StudyInstanceUID=uids["lateral"],
        SOPInstanceUID=sop,
    )
    (root / uids["broken"]).mkdir()
    (root / uids["broken"] / f"{generate_uid()}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    (root / "film.jpeg").write_bytes(sample_images[0].read_bytes())
    return uids


def test_each_study_has_its_rows_and_the_files_written_for_it(
    tmp_path: Path, bundle_root: Path, sample_images: list[Path]
) -> None:
    uids = studies(tmp_path / "in", sample_images)
    out = tmp_path / "out"
    summary = run_inference(
        [tmp_path / "in"], out, bundle=bundle_root, device="cpu", workers=0, heatmaps=True, fhir=True
    )
    rows = read_results_csv(out / "results.csv")
    by_study: dict[str, list[str]] = {}
    for row in rows:
        if row["study_uid"]:
            by_study.setdefault(row["study_uid"], []).append(row["path"])
    assert by_study.keys() == summary.studies.keys()
    assert uids["broken"] not in summary.studies  # its header was never read: in no study
    assert not any(row["path"] == "film.jpeg" and row["study_uid"] for row in rows)
    for study_uid, outcome in summary.studies.items():
        assert [row.path for row in outcome.rows] == by_study[study_uid]
    good = summary.studies[uids["good"]]
    assert [row.status for row in good.rows] == ["ok", "ok"]
    assert good.sr_path == out / "sr" / f"{uids['good']}.dcm" and good.sr_path.is_file()
    assert good.fhir_path == out / "fhir" / f"{uids['good']}.json" and good.fhir_path.is_file()
    assert sorted(path.name for path in good.sc_paths) == sorted(f"{row.sop_uid}.dcm" for row in good.rows)
    for path in good.sc_paths:  # the Secondary Captures are filed in their study
        assert pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID == uids["good"]
    lateral = summary.studies[uids["lateral"]]
    assert [row.status for row in lateral.rows] == ["skipped"]
    assert lateral.sr_path is None and lateral.sc_paths == [] and lateral.fhir_path is None

    # a second run keeps the SR and the Bundle and still names them for the study
    again = run_inference(
        [tmp_path / "in"], out, bundle=bundle_root, device="cpu", workers=0, heatmaps=True, fhir=True
    )
    assert again.n_reused == len(rows) - 1  # the broken file is retried
    assert again.studies[uids["good"]].sr_path == good.sr_path
    assert sorted(again.studies[uids["good"]].sc_paths) == sorted(good.sc_paths)


def test_the_node_takes_each_studys_outcome_from_the_summary(
    tmp_path: Path, bundle_root: Path, sample_images: list[Path]
) -> None:
    uids = studies(tmp_path / "in", sample_images)
    (tmp_path / "in" / "film.jpeg").unlink()  # the inbox holds study folders only
    processor = InferenceProcessor(bundle=bundle_root, device="cpu", heatmaps=True)
    dirs = [tmp_path / "in" / uids[name] for name in ("good", "lateral", "broken")]
    outcomes = processor.process_many(dirs, tmp_path / "out")
    good = outcomes[dirs[0]]
    assert isinstance(good, list) and good[0] == tmp_path / "out" / "sr" / f"{uids['good']}.dcm"
    scs = good[1:]
    assert len(scs) == 2
    assert {pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID for path in scs} == {uids["good"]}
    assert outcomes[dirs[1]] == []  # nothing to report: a lateral only
    broken = outcomes[dirs[2]]
    assert isinstance(broken, StudyProcessingError)
    assert str(broken) == "no SR: no file of the study was read"
