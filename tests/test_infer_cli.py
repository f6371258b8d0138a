"""``pneumonia-monai infer`` end to end on a generated folder of mixed studies.

The bundle used is a copy of the shipped ``inference.json`` (same preprocessing, post-processing,
threshold and class names) whose ``spatial_size`` is 64 and whose ``network_def`` is a small MONAI
DenseNet, with a seeded random checkpoint, so that the suite runs in seconds on a CPU. One test runs the
shipped DenseNet121 ``network_def`` itself.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from dicom_factory import make_cr, referenced_sop_uids
from infer_helpers import (
    EXPECTED,
    MODEL_VERSION,
    PHI,
    PHI_STRINGS,
    SHIPPED_CONFIG,
    SMALL_NET,
    STUDY_A,
    STUDY_B,
    STUDY_C,
    build_dataset,
    chest,
    film,
    write_bundle,
)
from node_helpers import wait_until
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from pneumonia_monai.cli import infer as infer_cli
from pneumonia_monai.inference import runner
from pneumonia_monai.inference.bundle import BundleError, InferenceBundle, load_bundle
from pneumonia_monai.inference.manifest import (
    RESULT_COLUMNS,
    STUDY_COLUMNS,
    SUBTYPE_COLUMNS,
    THREE_CLASS_COLUMNS,
)
from pneumonia_monai.inference.runner import in_flight_limit, run_inference
from pneumonia_monai.transforms import load_film
from pneumonia_monai.visualize.overlay import display_scale


def all_files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "bundle", network_def=SMALL_NET)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("data") / "in")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, bundle_dir, dataset):
    """One uninterrupted CLI run with heatmaps, logging everything at DEBUG into a capture."""
    out = tmp_path_factory.mktemp("full") / "out"
    before = all_files(dataset)
    capture = _Capture()
    capture.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        status = infer_cli.main(
            [str(dataset), "--output", str(out), "--bundle", str(bundle_dir), "--heatmaps", "-v"]
        )
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    return {"status": status, "out": out, "before": before, "log": "\n".join(capture.lines)}


def by_path(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in rows}


# ---------------------------------------------------------------------------------------- tests


def test_every_file_gets_exactly_one_row_with_its_status_and_reason(full_run, dataset):
    assert full_run["status"] == 1  # broken, truncated and short files are errors
    out = full_run["out"]
    assert (out / "results.csv").read_text(encoding="utf-8").splitlines()[0] == ",".join(RESULT_COLUMNS)
    rows = read_csv(out / "results.csv")
    assert [row["path"] for row in rows] == sorted(EXPECTED)  # one row per file, in a stable order
    assert set(all_files(dataset)) == set(EXPECTED)
    for row in rows:
        status, reason = EXPECTED[row["path"]]
        assert row["status"] == status, row
        assert reason in row["reason"], row
        assert row["threshold"] == "0.5" and row["model_version"] == MODEL_VERSION
        if status == "ok":
            prob = float(row["prob_pneumonia"])
            assert 0.0 <= prob <= 1.0
            assert row["prediction"] == ("pneumonia" if prob >= 0.5 else "normal")
        else:
            assert row["prob_pneumonia"] == "" and row["prediction"] == ""


def test_rows_carry_the_uids_and_view_of_their_file(full_run, dataset):
    rows = by_path(read_csv(full_run["out"] / "results.csv"))
    for rel, row in rows.items():
        if rel.endswith(".dcm") and rel not in ("empty.dcm", "studyC/truncated.dcm"):
            ds = pydicom.dcmread(dataset / rel, stop_before_pixels=True)
            assert (row["study_uid"], row["series_uid"], row["sop_uid"]) == (
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
                ds.SOPInstanceUID,
            )
            assert row["view"] == str(ds.get("ViewPosition", ""))
        elif rel.startswith(("kaggle/", "notes", "__MACOSX", "empty")):
            assert row["study_uid"] == row["series_uid"] == row["sop_uid"] == row["view"] == ""
    # distinct films give distinct probabilities (the model really looked at each one)
    probs = [row["prob_pneumonia"] for row in rows.values() if row["status"] == "ok"]
    assert len(set(probs)) == len(probs) == 5


def test_results_json_holds_the_same_rows(full_run):
    csv_rows = read_csv(full_run["out"] / "results.csv")
    json_rows = json.loads((full_run["out"] / "results.json").read_text(encoding="utf-8"))
    assert len(json_rows) == len(csv_rows)
    for csv_row, json_row in zip(csv_rows, json_rows, strict=True):
        assert list(json_row) == list(RESULT_COLUMNS)
        text = {
            k: "" if v is None else (repr(v) if isinstance(v, float) else str(v)) for k, v in json_row.items()
        }
        assert text == csv_row


def test_studies_csv_aggregates_by_maximum(full_run):
    out = full_run["out"]
    rows = read_csv(out / "results.csv")
    studies = read_csv(out / "studies.csv")
    assert (out / "studies.csv").read_text().splitlines()[0] == ",".join(STUDY_COLUMNS)
    assert [s["study_uid"] for s in studies] == [STUDY_A, STUDY_B, STUDY_C]
    for study in studies:
        ok = [
            float(r["prob_pneumonia"])
            for r in rows
            if r["study_uid"] == study["study_uid"] and r["status"] == "ok"
        ]
        assert int(study["n_images"]) == len(ok)
        assert study["threshold"] == "0.5" and study["model_version"] == MODEL_VERSION
        if ok:
            assert float(study["prob_pneumonia"]) == max(ok)
            assert study["prediction"] == ("pneumonia" if max(ok) >= 0.5 else "normal")
            assert study["sr_path"] == f"sr/{study['study_uid']}.dcm"
        else:
            assert study["prob_pneumonia"] == study["prediction"] == study["sr_path"] == ""
    assert [int(s["n_images"]) for s in studies] == [2, 1, 0]
    assert sorted(p.name for p in (out / "sr").iterdir()) == sorted([f"{STUDY_A}.dcm", f"{STUDY_B}.dcm"])


def _content_items(items):
    for item in items:
        yield item
        yield from _content_items(item.get("ContentSequence", []))


def test_sr_reports_exactly_the_ok_images_of_its_study(full_run, dataset):
    out = full_run["out"]
    rows = read_csv(out / "results.csv")
    for study_uid in (STUDY_A, STUDY_B):
        ok = [r for r in rows if r["study_uid"] == study_uid and r["status"] == "ok"]
        sr = hd.sr.srread(out / "sr" / f"{study_uid}.dcm")
        assert sr.StudyInstanceUID == study_uid
        source_series = {r["series_uid"] for r in rows if r["study_uid"] == study_uid}
        assert sr.SeriesInstanceUID not in source_series
        assert sr.SOPInstanceUID not in {r["sop_uid"] for r in rows}
        items = list(_content_items(sr.ContentSequence))
        codes = {
            (c.CodeValue, c.CodingSchemeDesignator)
            for item in items
            for c in [*item.get("ConceptCodeSequence", []), *item.get("ConceptNameCodeSequence", [])]
        }
        assert ("233604007", "SCT") in codes
        referenced = {
            ref.ReferencedSOPInstanceUID
            for item in items
            if item.ValueType == "IMAGE"
            for ref in item.ReferencedSOPSequence
        }
        assert referenced == {r["sop_uid"] for r in ok}
        evidence = {
            ref.ReferencedSOPInstanceUID
            for study in sr.CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence
        }
        assert evidence == {r["sop_uid"] for r in ok}
        # the study-level probability in the report is the one of studies.csv
        study_row = next(s for s in read_csv(out / "studies.csv") if s["study_uid"] == study_uid)
        nums = [
            float(item.MeasuredValueSequence[0].NumericValue)
            for item in items
            if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == "PNEUMONIA-PROB"
        ]
        assert len(nums) == len(ok) + 1
        assert max(nums) == pytest.approx(float(study_row["prob_pneumonia"]), abs=1e-6)


def test_heatmaps_png_for_every_ok_image_and_sc_for_dicom(full_run, dataset):
    out = full_run["out"]
    rows = [r for r in read_csv(out / "results.csv") if r["status"] == "ok"]
    expected_png = {r["path"].replace("/", "__") + ".png" for r in rows}
    expected_sc = {f"{r['sop_uid']}.dcm" for r in rows if r["sop_uid"]}
    assert {p.name for p in (out / "heatmaps").iterdir()} == expected_png | expected_sc
    for row in rows:
        # the heatmap is laid over the whole film at its own geometry, long side brought into [512, 2048]
        film, _ = load_film(dataset / row["path"])
        scale = display_scale(film.shape)
        rows_cols = (round(film.shape[0] * scale), round(film.shape[1] * scale))
        assert 512 <= max(rows_cols) <= 2048
        with Image.open(out / "heatmaps" / (row["path"].replace("/", "__") + ".png")) as img:
            assert (img.mode, img.size[::-1]) == ("RGB", rows_cols)
        if not row["sop_uid"]:
            continue
        sc = pydicom.dcmread(out / "heatmaps" / f"{row['sop_uid']}.dcm")
        assert sc.SOPClassUID == SecondaryCaptureImageStorage
        assert sc.StudyInstanceUID == row["study_uid"]
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == row["sop_uid"]
        assert (sc.Rows, sc.Columns, sc.SamplesPerPixel) == (*rows_cols, 3)
        assert "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription


def test_inputs_are_never_modified(full_run, dataset):
    assert all_files(dataset) == full_run["before"]


def test_no_patient_identifiers_in_tables_images_state_or_logs(full_run):
    out = full_run["out"]
    log = full_run["log"]
    assert "infer: 16 file(s): 5 ok, 8 skipped, 3 error" in log  # the summary line
    for needle in PHI_STRINGS:
        assert needle not in log
    checked = 0
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".dcm":
            # SR and Secondary Capture are filed in the patient's study: they must carry the same patient.
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.PatientID == PHI["PatientID"]
            continue
        checked += 1
        for needle in PHI_STRINGS:
            assert needle.encode() not in data, f"{needle} in {path}"
    assert checked >= 10  # csv, json, studies, journal, sr state, pngs, lock


#: Films added to the inputs of the run that is killed, so that it is still running, by its size alone,
#: when its journal holds :data:`KILL_AT` entries (it scores them one by one with one worker).
EXTRA_FILMS = 150
#: The journal entries on disk at which the run is killed from outside (SIGKILL).
KILL_AT = 6


def journal_entries(path: Path) -> list[dict]:
    """The complete lines of a journal that may be being written (a torn last line is not one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


def test_a_killed_run_resumes_without_redoing_finished_files(
    tmp_path, bundle_dir, dataset, full_run, monkeypatch
):
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(EXTRA_FILMS):
        Image.fromarray(film(i, 48, 8).astype(np.uint8)).save(extra / f"extra{i:03d}.png")
    out = tmp_path / "out"
    journal_path = out / ".state" / "journal.jsonl"
    command = [
        sys.executable,
        "-m",
        "pneumonia_monai",
        "infer",
        str(dataset),
        str(extra),
        "--output",
        str(out),
        "--bundle",
        str(bundle_dir),
        "--batch-size",
        "1",
        "--workers",
        "1",
        "-v",
    ]
    log_path = tmp_path / "killed.log"
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would stall the run
        run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_until(
                lambda: len(journal_entries(journal_path)) >= KILL_AT or run.poll() is not None,
                300,
                f"{KILL_AT} journal entries",
                lambda: log_path.read_text(errors="replace")[-2000:],
            )
            assert run.poll() is None, "the run ended before it was killed: " + log_path.read_text()[-2000:]
            run.send_signal(signal.SIGKILL)
        finally:
            run.kill()
            run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    killed_log = log_path.read_text(errors="replace")
    for needle in PHI_STRINGS:
        assert needle not in killed_log
    assert not (out / "results.csv").exists()
    journal = {entry["key"]: entry for entry in journal_entries(journal_path)}
    total = len(EXPECTED) + EXTRA_FILMS
    assert KILL_AT <= len(journal) < total
    done_ok = sum(1 for entry in journal.values() if entry["row"]["status"] == "ok")

    inferred: list[int] = []
    original = InferenceBundle.predict

    def counting(self, images):
        inferred.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(InferenceBundle, "predict", counting)
    summary = run_inference([dataset, extra], out, bundle=bundle_dir, batch_size=2, workers=1, progress=False)
    # exactly once: what the killed run recorded is reused, the rest is inferred, nothing twice
    assert sum(inferred) == summary.n_inferred == 5 + EXTRA_FILMS - done_ok
    assert summary.n_reused == sum(1 for entry in journal.values() if entry["row"]["status"] != "error")
    assert summary.counts == {"ok": 5 + EXTRA_FILMS, "skipped": 8, "error": 3}
    assert summary.exit_code == 1

    # the manifest is the one of the uninterrupted run (batch composition may move the last float bits)
    rows = read_csv(out / "results.csv")
    assert len(rows) == total and len({row["path"] for row in rows}) == total
    assert {row["path"] for row in rows[len(EXPECTED) :]} == {f"extra{i:03d}.png" for i in range(EXTRA_FILMS)}
    resumed = rows[: len(EXPECTED)]
    reference = read_csv(full_run["out"] / "results.csv")
    assert len(resumed) == len(reference) == len(EXPECTED)
    for got, want in zip(resumed, reference, strict=True):
        assert {k: v for k, v in got.items() if k != "prob_pneumonia"} == {
            k: v for k, v in want.items() if k != "prob_pneumonia"
        }
        if want["prob_pneumonia"]:
            assert float(got["prob_pneumonia"]) == pytest.approx(float(want["prob_pneumonia"]), abs=1e-6)
    studies = read_csv(out / "studies.csv")
    assert [(s["study_uid"], s["n_images"], s["sr_path"]) for s in studies] == [
        (s["study_uid"], s["n_images"], s["sr_path"]) for s in read_csv(full_run["out"] / "studies.csv")
    ]
    assert len(journal_path.read_text().splitlines()) == total

    # a third run recomputes nothing and keeps the SRs as they are; --force recomputes everything
    sr_a = out / "sr" / f"{STUDY_A}.dcm"
    sr_uid = pydicom.dcmread(sr_a).SOPInstanceUID
    inferred.clear()
    again = run_inference([dataset], out, bundle=bundle_dir, batch_size=2, workers=1, progress=False)
    assert inferred == [] and again.n_inferred == 0 and again.n_reused == 13
    assert pydicom.dcmread(sr_a).SOPInstanceUID == sr_uid
    assert read_csv(out / "results.csv") == resumed
    forced = run_inference(
        [dataset], out, bundle=bundle_dir, batch_size=4, workers=0, force=True, progress=False
    )
    assert sum(inferred) == forced.n_inferred == 5 and forced.n_reused == 0
    # rebuilt, but of the same images by the same model: the same object (issue 10, item 4)
    assert pydicom.dcmread(sr_a).SOPInstanceUID == sr_uid


def test_a_changed_input_file_is_recomputed(tmp_path, bundle_dir):
    data = tmp_path / "in"
    chest(data / "a.dcm", 0, STUDY_A)
    chest(data / "b.dcm", 1, STUDY_A)
    out = tmp_path / "out"
    first = run_inference([data], out, bundle=bundle_dir, workers=0, progress=False)
    assert first.n_inferred == 2
    stat = (data / "b.dcm").stat()
    os.utime(data / "b.dcm", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = run_inference([data], out, bundle=bundle_dir, workers=0, progress=False)
    assert (second.n_inferred, second.n_reused) == (1, 1)
    # asking for heatmaps later computes them for the files that have none
    third = run_inference([data], out, bundle=bundle_dir, workers=0, heatmaps=True, progress=False)
    assert third.n_inferred == 2 and len(third.png_paths) == 2 and len(third.sc_paths) == 2


def test_sr_built_during_the_run_is_rebuilt_when_its_study_gets_more_images_later(
    tmp_path, bundle_dir, caplog
):
    """SRs are written while the run goes on, for studies a batch passed without adding to; a study whose
    files come in two stretches of the input order still ends with one SR over all of its images."""
    data = tmp_path / "in"
    early = chest(data / "0_a.dcm", 0, STUDY_A)
    others = [chest(data / f"{i}_b.dcm", i, STUDY_B) for i in range(1, 6)]
    late = chest(data / "9_a.dcm", 6, STUDY_A)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="pneumonia_monai.dicom.sr"):
        summary = run_inference([data], out, bundle=bundle_dir, batch_size=2, workers=0, progress=False)
    assert summary.exit_code == 0 and summary.counts["ok"] == 7
    built = [r.getMessage() for r in caplog.records if r.getMessage().startswith("built pneumonia SR")]
    # study A first with its early image (a batch of B only passed), then again with both; B once
    assert [m.split(" image(s)")[0] for m in built].count("built pneumonia SR for 1") == 1
    assert len(built) == 3
    assert sorted(p.name for p in (out / "sr").iterdir()) == sorted([f"{STUDY_A}.dcm", f"{STUDY_B}.dcm"])
    assert summary.sr_paths and len(summary.sr_paths) == 2
    sr_a = pydicom.dcmread(out / "sr" / f"{STUDY_A}.dcm")
    assert referenced_sop_uids(sr_a) == {early.SOPInstanceUID, late.SOPInstanceUID}
    sr_b = pydicom.dcmread(out / "sr" / f"{STUDY_B}.dcm")
    assert referenced_sop_uids(sr_b) == {ds.SOPInstanceUID for ds in others}
    # a second run with the same results keeps both reports as they are
    again = run_inference([data], out, bundle=bundle_dir, batch_size=2, workers=0, progress=False)
    assert again.n_reused == 7
    assert pydicom.dcmread(out / "sr" / f"{STUDY_A}.dcm").SOPInstanceUID == sr_a.SOPInstanceUID


@pytest.mark.parametrize("failures", [1, 99])
def test_an_sr_that_cannot_be_built_is_retried_at_the_end_then_fails_the_run(
    tmp_path, bundle_dir, monkeypatch, caplog, failures
):
    """A failure while the run goes on is only a warning (the end of the run tries again); a failure at
    the end is an output failure: exit status 1, the rows still ``ok``, no report file."""
    from pneumonia_monai.dicom import sr as sr_module

    data = tmp_path / "in"
    chest(data / "0_a.dcm", 0, STUDY_A)
    for i in range(1, 5):
        chest(data / f"{i}_b.dcm", i, STUDY_B)
    real = sr_module.build_pneumonia_sr
    calls: list[str] = []

    def flaky(sources, findings, **kwargs):
        calls.append(str(sources[0].StudyInstanceUID))
        if str(sources[0].StudyInstanceUID) == STUDY_A and calls.count(STUDY_A) <= failures:
            raise ValueError("simulated failure")
        return real(sources, findings, **kwargs)

    monkeypatch.setattr(sr_module, "build_pneumonia_sr", flaky)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        summary = run_inference([data], out, bundle=bundle_dir, batch_size=2, workers=0, progress=False)
    assert calls.count(STUDY_A) == 2  # once during the run (after a batch of B only), once at the end
    assert summary.counts["ok"] == 5
    assert "retried at the end" in caplog.text
    if failures == 1:
        assert summary.exit_code == 0 and summary.output_failures == 0
        assert (out / "sr" / f"{STUDY_A}.dcm").is_file()
    else:
        assert summary.exit_code == 1 and summary.output_failures == 1
        assert not (out / "sr" / f"{STUDY_A}.dcm").exists()
        assert f"study {STUDY_A}: SR not written: ValueError: simulated failure" in caplog.text
        study_a = next(r for r in read_csv(out / "studies.csv") if r["study_uid"] == STUDY_A)
        assert study_a["sr_path"] == ""
    assert (out / "sr" / f"{STUDY_B}.dcm").is_file()


def test_in_flight_items_stay_bounded_on_a_large_folder(tmp_path, bundle_dir, monkeypatch, caplog):
    data = tmp_path / "films"
    data.mkdir()
    for i in range(24):
        Image.fromarray(film(i, 48, 8).astype(np.uint8)).save(data / f"f{i:03d}.png")
    lock = threading.Lock()
    alive = {"now": 0, "peak": 0}
    original_prepare = runner._Context.prepare
    original_predict = InferenceBundle.predict

    def prepare(self, job):
        item = original_prepare(self, job)
        if item.image is not None:
            with lock:
                alive["now"] += 1
                alive["peak"] = max(alive["peak"], alive["now"])
        return item

    def predict(self, images):
        with lock:
            alive["now"] -= images.shape[0]
        return original_predict(self, images)

    monkeypatch.setattr(runner._Context, "prepare", prepare)
    monkeypatch.setattr(InferenceBundle, "predict", predict)
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 10)
    with caplog.at_level(logging.INFO, logger="pneumonia_monai"):
        summary = run_inference(
            [data], tmp_path / "out", bundle=bundle_dir, batch_size=2, workers=2, progress=False
        )
    # without a terminal, progress is plain log lines
    progress_lines = [r.getMessage() for r in caplog.records if r.getMessage().endswith("file(s) done")]
    assert {"infer: 10/24 file(s) done", "infer: 20/24 file(s) done"} <= set(progress_lines)
    bound = in_flight_limit(2, 2)
    assert summary.counts["ok"] == 24 and summary.exit_code == 0
    assert bound < 24
    assert alive["now"] == 0
    assert 2 <= alive["peak"] <= bound
    assert summary.peak_in_flight <= summary.in_flight_limit == bound


def test_three_class_bundle_without_sr_on_a_clean_folder_exits_0(tmp_path, monkeypatch):
    bundle = write_bundle(
        tmp_path / "bundle", network_def=SMALL_NET, class_names=["normal", "bacterial", "viral"]
    )
    data = tmp_path / "in"
    chest(data / "s/a.dcm", 0, STUDY_A)
    chest(data / "s/b.dcm", 9, STUDY_A, view="AP")
    Image.fromarray(film(3, 64, 8).astype(np.uint8)).save(data / "c.png")
    out = tmp_path / "out"
    # no --bundle: the default bundle, here the one PNEUMONIA_MONAI_BUNDLE names (see locate_bundle_root)
    monkeypatch.setenv("PNEUMONIA_MONAI_BUNDLE", str(bundle))
    status = infer_cli.main([str(data), "--output", str(out), "--no-sr", "-q"])
    assert status == 0
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header == [*RESULT_COLUMNS, *THREE_CLASS_COLUMNS]
    rows = read_csv(out / "results.csv")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    for row in rows:
        normal, bacterial, viral = (float(row[c]) for c in SUBTYPE_COLUMNS)
        assert normal + bacterial + viral == pytest.approx(1.0, abs=1e-5)
        assert float(row["prob_pneumonia"]) == pytest.approx(1.0 - normal, abs=1e-12)
        # the subtype follows the two-class prediction, then the likelier pneumonia subtype
        expected = (
            "normal" if row["prediction"] == "normal" else ("bacterial" if bacterial >= viral else "viral")
        )
        assert row["subtype"] == expected
    assert not (out / "sr").exists()
    (study,) = read_csv(out / "studies.csv")
    assert study["n_images"] == "2" and study["sr_path"] == ""
    loaded = load_bundle(bundle, device="cpu")
    assert loaded.three_class and loaded.class_names == ("normal", "bacterial", "viral")
    assert not any(module.training for module in loaded.network.modules())


def test_variant_subtype_reads_its_overlay_and_checkpoint(tmp_path, caplog):
    """``--variant subtype``: the shipped ``inference_subtype.json`` over ``inference.json`` gives three
    classes from ``models/subtype/model.pt``; without the flag the same bundle stays two-class."""
    bundle = write_bundle(tmp_path / "bundle", network_def=SMALL_NET)
    shutil.copy(SHIPPED_CONFIG.with_name("inference_subtype.json"), bundle / "configs")
    data = tmp_path / "in"
    chest(data / "a.dcm", 0, STUDY_A)
    base = [str(data), "--bundle", str(bundle), "--no-sr", "-q"]
    with caplog.at_level(logging.ERROR, logger="pneumonia_monai"):
        assert infer_cli.main([*base, "--output", str(tmp_path / "missing"), "--variant", "subtype"]) == 2
    assert "subtype" in caplog.text and "model.pt" in caplog.text  # the checkpoint is not there yet
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pneumonia_monai"):
        assert infer_cli.main([*base, "--output", str(tmp_path / "nope"), "--variant", "nope"]) == 2
    assert "bundle variant 'nope'" in caplog.text

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config({**json.loads((bundle / "configs" / "inference.json").read_text()), "num_classes": 3})
    (bundle / "models" / "subtype").mkdir()
    torch.save(
        parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "subtype" / "model.pt"
    )
    assert infer_cli.main([*base, "--output", str(tmp_path / "three"), "--variant", "subtype"]) == 0
    header = (tmp_path / "three" / "results.csv").read_text().splitlines()[0].split(",")
    assert header == [*RESULT_COLUMNS, *THREE_CLASS_COLUMNS]
    (row,) = read_csv(tmp_path / "three" / "results.csv")
    assert float(row["prob_pneumonia"]) == pytest.approx(1.0 - float(row["prob_normal"]), abs=1e-6)
    assert row["model_version"].endswith("+subtype") and row["subtype"] in ("normal", "bacterial", "viral")
    assert infer_cli.main([*base, "--output", str(tmp_path / "two")]) == 0
    assert "+" not in read_csv(tmp_path / "two" / "results.csv")[0]["model_version"]
    with caplog.at_level(logging.ERROR, logger="pneumonia_monai"):
        assert infer_cli.main([*base, "--output", str(tmp_path / "bad"), "--variant", "../x"]) == 2
    assert (tmp_path / "two" / "results.csv").read_text().splitlines()[0].split(",") == [*RESULT_COLUMNS]


def test_the_shipped_densenet121_network_def_runs(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")  # the shipped network_def, spatial size 64
    data = tmp_path / "in"
    chest(data / "a.dcm", 2, STUDY_A)
    out = tmp_path / "out"
    summary = run_inference([data / "a.dcm"], out, bundle=bundle, workers=0, progress=False)
    assert summary.exit_code == 0 and summary.counts["ok"] == 1
    (row,) = read_csv(out / "results.csv")
    assert row["path"] == "a.dcm"  # a file input is named by its own name
    assert summary.sr_paths == [out / "sr" / f"{STUDY_A}.dcm"]


def _break(bundle: Path, case: str) -> str:
    """Make the bundle unusable in one way; return a piece of the expected message."""
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    if case == "missing checkpoint":
        (bundle / "models" / "model.pt").unlink()
        return "model.pt not found"
    if case == "wrong shapes":
        torch.manual_seed(0)
        from monai.networks.nets import DenseNet

        other = DenseNet(
            spatial_dims=2, in_channels=1, out_channels=3, init_features=8, growth_rate=8, block_config=(2, 2)
        )
        torch.save(other.state_dict(), bundle / "models" / "model.pt")
        return "does not fit 'network_def'"
    if case == "missing key":
        del config["threshold"]
        config_path.write_text(json.dumps(config))
        return "lacks key(s) threshold"
    if case == "bad threshold":
        config["threshold"] = 1.5
        config_path.write_text(json.dumps(config))
        return "'threshold' must be a number in [0, 1]"
    if case == "unknown classes":
        config["class_names"] = ["healthy", "sick"]
        config_path.write_text(json.dumps(config))
        return "'class_names' must be"
    if case == "not a checkpoint":
        (bundle / "models" / "model.pt").write_bytes(b"not a torch file")
        return "cannot be read"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing checkpoint",
        "wrong shapes",
        "missing key",
        "bad threshold",
        "unknown classes",
        "not a checkpoint",
    ],
)
def test_an_unusable_bundle_exits_2_with_a_one_line_message(tmp_path, caplog, case):
    bundle = write_bundle(tmp_path / "bundle", network_def=SMALL_NET)
    expected = _break(bundle, case)
    data = tmp_path / "in"
    data.mkdir()
    Image.fromarray(film(0, 64, 8).astype(np.uint8)).save(data / "a.png")
    with caplog.at_level(logging.ERROR, logger="pneumonia_monai"):
        status = infer_cli.main([str(data), "--output", str(tmp_path / "out"), "--bundle", str(bundle), "-q"])
    assert status == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("unusable bundle: ") and expected in errors[0]
    assert not (tmp_path / "out").exists()  # nothing written before the bundle is known to be usable
    with pytest.raises(BundleError):
        load_bundle(bundle, device="cpu")


def test_usage_errors_exit_2(tmp_path, bundle_dir, caplog):
    data = tmp_path / "in"
    data.mkdir()
    Image.fromarray(film(0, 64, 8).astype(np.uint8)).save(data / "a.png")
    base = ["--output", str(tmp_path / "out"), "--bundle", str(bundle_dir), "-q"]
    assert infer_cli.main([str(tmp_path / "missing"), *base]) == 2
    assert infer_cli.main([str(data), *base, "--batch-size", "0"]) == 2
    assert infer_cli.main([str(data), *base, "--device", "tpu"]) == 2
    assert infer_cli.main([str(data)]) == 2  # no --output
    rules = tmp_path / "rules.yaml"
    rules.write_text("unknwon_key: 1\n")
    assert infer_cli.main([str(data), *base, "--rules", str(rules)]) == 2
    if not torch.cuda.is_available():
        assert infer_cli.main([str(data), *base, "--device", "cuda"]) == 2
        assert "CUDA is not available" in caplog.text
    with pytest.raises(TypeError, match="sequence of paths"):
        run_inference(str(data), tmp_path / "o", bundle=bundle_dir)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        run_inference([data], tmp_path / "o", bundle=bundle_dir, workers=-1)


def test_a_second_run_into_a_locked_output_fails_at_once(tmp_path, bundle_dir, caplog):
    data = tmp_path / "in"
    data.mkdir()
    Image.fromarray(film(0, 64, 8).astype(np.uint8)).save(data / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with caplog.at_level(logging.ERROR, logger="pneumonia_monai"):
            status = infer_cli.main([str(data), "--output", str(out), "--bundle", str(bundle_dir), "-q"])
    assert status == 2
    assert "another inference run is writing to" in caplog.text
    assert not (out / "results.csv").exists()
    assert infer_cli.main([str(data), "--output", str(out), "--bundle", str(bundle_dir), "-q"]) == 0


def test_the_output_folder_inside_an_input_is_not_read_back(tmp_path, bundle_dir):
    data = tmp_path / "in"
    chest(data / "a.dcm", 0, STUDY_A)
    out = data / "results"
    first = run_inference([data], out, bundle=bundle_dir, heatmaps=True, workers=0, progress=False)
    second = run_inference([data], out, bundle=bundle_dir, heatmaps=True, workers=0, progress=False)
    assert first.counts == second.counts == {"ok": 1, "skipped": 0, "error": 0}
    assert [r["path"] for r in read_csv(out / "results.csv")] == ["a.dcm"]
    # inputs that live in the output folder (a DICOM node's incoming/ folder, say) are read
    chest(out / "incoming" / "b.dcm", 1, STUDY_B)
    third = run_inference([out / "incoming"], out, bundle=bundle_dir, workers=0, progress=False)
    assert third.counts == {"ok": 1, "skipped": 0, "error": 0}
    assert [r["path"] for r in read_csv(out / "results.csv")] == ["b.dcm"]


@pytest.mark.parametrize("level", [0, 2048, 4095])
def test_blank_films_are_errors_never_scored_and_get_no_sr(tmp_path, level):
    """A uniform (black, grey, white) chest CR is an exposure or export failure: never a score."""
    bundle = write_bundle(tmp_path / "bundle")
    data = tmp_path / "in"
    rng = np.random.default_rng(level)
    blank = np.clip(level + rng.integers(-3, 4, (96, 96)), 0, 4095).astype(np.uint16)  # sensor noise only
    make_cr(data / "blank.dcm", pixels=blank, StudyInstanceUID=STUDY_B, **PHI)
    chest(data / "good.dcm", 0, STUDY_A)
    out = tmp_path / "out"
    summary = run_inference([data], out, bundle=bundle, workers=0, progress=False)
    assert summary.exit_code == 1  # an error row
    rows = {r["path"]: r for r in read_csv(out / "results.csv")}
    assert rows["good.dcm"]["status"] == "ok"
    bad = rows["blank.dcm"]
    assert bad["status"] == "error" and bad["prob_pneumonia"] == "" and bad["prediction"] == ""
    assert bad["reason"].startswith("no usable image content") and "not scored" in bad["reason"]
    assert not (out / "sr" / f"{STUDY_B}.dcm").exists()  # no SR is ever sent for it
    assert (out / "sr" / f"{STUDY_A}.dcm").exists()


# ------------------------------------------------------- hostile patient elements (issue 10, 1, 4, 9)

#: Distinctive patient values of the hostile films: none may reach a log line.
HOSTILE_PHI = {"PatientName": "Quokka^Brontosaurus", "PatientID": "PHIID5550199"}
HOSTILE_STRINGS = ("Quokka", "Brontosaurus", "PHIID5550199", "1901-02-03", "Zorrino")


def unknown_vr_film(path: Path, index: int, study: str) -> None:
    """A good chest film whose Patient's Name (0010,0010) carries the VR bytes ``ZZ``."""
    make_cr(path, pixels=film(index), StudyInstanceUID=study, PatientName="Zorrino^Xylophone")
    data = path.read_bytes()
    at = data.index(b"\x10\x00\x10\x00PN")
    path.write_bytes(data[: at + 4] + b"ZZ" + data[at + 6 :])


def test_hostile_patient_elements_never_abort_the_run_and_never_reach_the_log(tmp_path, bundle_dir):
    """An unknown VR and an invalid birth date: each film still gets its SR (the element left out, named
    by tag), and at DEBUG no patient value reaches stderr, pydicom's warnings included."""
    data = tmp_path / "in"
    chest(data / "good.dcm", 0, STUDY_A)
    unknown_vr_film(data / "zz.dcm", 1, STUDY_B)
    make_cr(
        data / "birth.dcm",
        pixels=film(2),
        StudyInstanceUID=STUDY_C,
        PatientName=HOSTILE_PHI["PatientName"],
        PatientID=HOSTILE_PHI["PatientID"],
        PatientBirthDate="1901-02-03",
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pneumonia_monai", "infer", str(data), "--output", str(out)]
    command += ["--bundle", str(bundle_dir), "--heatmaps", "-v"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "Traceback" not in log
    assert {r["path"]: r["status"] for r in read_csv(out / "results.csv")} == dict.fromkeys(
        ["birth.dcm", "good.dcm", "zz.dcm"], "ok"
    )
    for study in (STUDY_A, STUDY_B, STUDY_C):
        assert (out / "sr" / f"{study}.dcm").is_file()
    assert pydicom.dcmread(out / "sr" / f"{STUDY_C}.dcm").PatientBirthDate == ""
    assert pydicom.dcmread(out / "sr" / f"{STUDY_C}.dcm").PatientID == HOSTILE_PHI["PatientID"]
    assert pydicom.dcmread(out / "sr" / f"{STUDY_B}.dcm").PatientName == ""
    assert "(0010,0010) PatientName is unreadable or invalid; left out" in log
    assert "(0010,0030) PatientBirthDate is unreadable or invalid; left out" in log
    assert "DEBUG" in log  # the log was written at DEBUG ...
    leaked = [value for value in HOSTILE_STRINGS if value in log]
    assert leaked == []  # ... without a patient value


def test_any_exception_while_building_an_sr_is_an_output_failure_not_an_aborted_run(
    tmp_path, bundle_dir, monkeypatch, caplog
):
    from pneumonia_monai.dicom import sr as sr_module

    data = tmp_path / "in"
    chest(data / "a.dcm", 0, STUDY_A)
    chest(data / "b.dcm", 1, STUDY_B)
    real = sr_module.build_pneumonia_sr

    def unknown_vr(sources, findings, **kwargs):
        if str(sources[0].StudyInstanceUID) == STUDY_A:
            raise NotImplementedError("Unknown Value Representation 'ZZ' in tag (0010,0010)")
        return real(sources, findings, **kwargs)

    monkeypatch.setattr(sr_module, "build_pneumonia_sr", unknown_vr)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai"):
        status = infer_cli.main([str(data), "--output", str(out), "--bundle", str(bundle_dir), "-q"])
    assert status == 1
    assert [r["status"] for r in read_csv(out / "results.csv")] == ["ok", "ok"]
    assert f"study {STUDY_A}: SR not written: NotImplementedError" in caplog.text
    assert not (out / "sr" / f"{STUDY_A}.dcm").exists()
    assert (out / "sr" / f"{STUDY_B}.dcm").is_file()


def test_a_rerun_gives_the_same_result_uids_and_other_sources_new_ones(tmp_path, bundle_dir):
    data = tmp_path / "in"
    chest(data / "a1.dcm", 0, STUDY_A)
    chest(data / "a2.dcm", 1, STUDY_A, view="AP")

    def uids(out: Path) -> tuple[tuple[str, str], set[tuple[str, str]]]:
        sr = pydicom.dcmread(out / "sr" / f"{STUDY_A}.dcm")
        scs = {
            (ds.SOPInstanceUID, ds.SeriesInstanceUID)
            for ds in (pydicom.dcmread(path) for path in (out / "heatmaps").glob("*.dcm"))
        }
        return (sr.SOPInstanceUID, sr.SeriesInstanceUID), scs

    for name in ("first", "second"):
        run_inference([data], tmp_path / name, bundle=bundle_dir, heatmaps=True, workers=0, progress=False)
    first, second = uids(tmp_path / "first"), uids(tmp_path / "second")
    assert first == second
    assert len(first[1]) == 2
    chest(data / "a3.dcm", 2, STUDY_A)
    run_inference([data], tmp_path / "third", bundle=bundle_dir, heatmaps=True, workers=0, progress=False)
    third = uids(tmp_path / "third")
    assert third[0][0] != first[0][0] and third[0][1] != first[0][1]
    assert first[1] < third[1]  # the heatmaps of the same films are the same objects


def test_three_class_variant_end_to_end_from_the_committed_checkpoint(tmp_path, repo_root):
    """``infer --variant subtype`` with the shipped bundle: its own checkpoint, calibration and threshold."""
    out = tmp_path / "out"
    status = infer_cli.main(
        [str(repo_root / "bundle/sample_data/dicom"), "--output", str(out), "--variant", "subtype", "-q"]
    )
    assert status == 0
    overlay = json.loads((repo_root / "bundle/configs/inference_subtype.json").read_text())
    rows = [r for r in read_csv(out / "results.csv") if r["status"] == "ok"]
    assert len(rows) == 4
    for row in rows:
        assert row["model_version"].endswith("+subtype")
        assert float(row["threshold"]) == overlay["threshold"]
        normal = float(row["prob_normal"])
        assert float(row["prob_pneumonia"]) == pytest.approx(1.0 - normal, abs=1e-9)
        assert row["subtype"] in ("normal", "bacterial", "viral")
        assert (row["subtype"] == "normal") == (row["prediction"] == "normal")
    assert {r["prediction"] for r in rows} == {"normal", "pneumonia"}  # the sample holds both
    assert list((out / "sr").glob("*.dcm"))


def test_a_calibration_bias_of_another_class_count_is_an_unusable_bundle(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    config["logit_bias"] = [0.0, 1.0, 2.0]  # three offsets for a two-class network
    config_path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match="logit_bias"):
        load_bundle(bundle, device="cpu")
