"""The node keeps its model and its disk: one bundle load per process, a retention for the work folder.

- retention (:meth:`Inbox.purge`): a finished study's instances and results are deleted once its
  ``status.json`` is older than ``keep_days`` (``done/``) or ``keep_failed_days`` (``failed/``), late
  files and quarantined entries by their own age; the marker stays, so a copy sent again afterwards is
  still a late arrival and never a second result; ``keep_days`` 0 deletes a study's data as soon as its
  results were sent, never a failed study's; the node purges at start, from its scheduler thread;
- one load: two studies processed one after the other by a node with the real
  :class:`InferenceProcessor` (tiny random bundle) load the bundle once;
- the ``serve`` flags and configuration keys, and their validation.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from dicom_factory import make_cr
from node_helpers import NODE_AET, wait_until
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage

from pneumonia_monai.cli import serve
from pneumonia_monai.inference import bundle as bundle_module
from pneumonia_monai.inference import runner as runner_module
from pneumonia_monai.node.config import NodeConfig, StowDestination, config_from_mapping
from pneumonia_monai.node.destinations import SendError
from pneumonia_monai.node.inbox import DONE, FAILED, Inbox, StoreOutcome
from pneumonia_monai.node.processor import InferenceProcessor
from pneumonia_monai.node.service import SECONDS_PER_DAY, DicomNode

DAY = SECONDS_PER_DAY


class FileProcessor:
    """Writes one result file per study (any file: the destination double does not parse it)."""

    def process(self, study_dir: Path, out_dir: Path) -> list[Path]:
        path = out_dir / f"{study_dir.name}.dcm"
        path.write_bytes(b"result")
        return [path]


class RecordingDestination:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[list[str]] = []
        self.lock = threading.Lock()

    def send(self, paths: Sequence[Path]) -> None:
        if self.fail:
            raise SendError("destination down")
        with self.lock:
            self.sent.append([Path(path).name for path in paths])

    def __str__(self) -> str:
        return "recording destination"


@pytest.fixture
def node_defaults() -> dict[str, Any]:
    """conftest's start_node: a node writing one result file per study, sent to a recording double."""
    return {
        "processor": FileProcessor,
        "destination": RecordingDestination,
        "stable_seconds": 0.3,
        "drain_timeout": 60,
    }


def send(port: int, *datasets: Dataset) -> None:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established
    try:
        for ds in datasets:
            assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()


def study(folder: Path, n_images: int = 1) -> list[Path]:
    study_uid = generate_uid()
    paths = [folder / f"im{i}.dcm" for i in range(n_images)]
    for i, path in enumerate(paths):
        make_cr(path, StudyInstanceUID=study_uid, InstanceNumber=i + 1)
    return paths


# --------------------------------------------------------------------------------------------------
# Inbox.purge


def _finish(inbox: Inbox, status: str, age_days: float, now: float) -> tuple[str, Path]:
    """A study stored, processed with one result file and finished ``age_days`` before ``now``."""
    study_uid, sop_uid = generate_uid(), generate_uid()
    assert inbox.store(study_uid, sop_uid, b"instance") is StoreOutcome.STORED
    assert inbox.poll() == [study_uid]
    assert inbox.next_studies(1, timeout=1) == [study_uid]
    result = inbox.results_dir(study_uid) / "sr.dcm"
    result.write_bytes(b"sr")
    finished = inbox.finish(study_uid, status, reason="" if status == DONE else "boom", results=[result])
    marker = finished.path / "status.json"
    os.utime(marker, (now - age_days * DAY, now - age_days * DAY))
    return sop_uid, finished.path


def test_purge_deletes_patient_data_past_its_retention_and_keeps_the_markers(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "work", stable_seconds=0, queue_size=8)
    inbox.open()
    now = time.time()
    _, old_done = _finish(inbox, DONE, 8, now)
    _, young_done = _finish(inbox, DONE, 6, now)
    _, failed_10 = _finish(inbox, FAILED, 10, now)
    _, failed_31 = _finish(inbox, FAILED, 31, now)
    late = tmp_path / "work" / "late" / generate_uid()
    late.mkdir()
    (late / "old.dcm").write_bytes(b"x")
    (late / "young.dcm").write_bytes(b"x")
    os.utime(late / "old.dcm", (now - 8 * DAY, now - 8 * DAY))
    quarantined = tmp_path / "work" / "quarantine" / generate_uid()
    (quarantined / "results").mkdir(parents=True)
    (quarantined / "results" / "sr.dcm").write_bytes(b"x")
    os.utime(quarantined / "results" / "sr.dcm", (now - 31 * DAY, now - 31 * DAY))
    os.utime(quarantined / "results", (now - 31 * DAY, now - 31 * DAY))
    os.utime(quarantined, (now - 31 * DAY, now - 31 * DAY))

    report = inbox.purge(keep_seconds=7 * DAY, keep_failed_seconds=30 * DAY, now=now)

    assert (report.studies, report.late_files, report.quarantined) == (2, 1, 1)
    for gone in (old_done, failed_31):
        assert not (gone / "instances").exists() and not (gone / "results").exists()
        assert json.loads((gone / "status.json").read_text())["status"] in {DONE, FAILED}
    assert (failed_31 / "reason.txt").read_text() == "boom\n"
    for kept in (young_done, failed_10):
        assert len(list((kept / "instances").iterdir())) == 1 and (kept / "results" / "sr.dcm").is_file()
    assert sorted(p.name for p in late.iterdir()) == ["young.dcm"]
    assert not quarantined.exists()
    # A second purge finds nothing more to delete.
    assert inbox.purge(keep_seconds=7 * DAY, keep_failed_seconds=30 * DAY, now=now).total == 0


def test_a_copy_of_a_purged_study_is_still_late_never_a_second_result(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "work", stable_seconds=0, queue_size=8)
    inbox.open()
    now = time.time()
    sop_uid, done = _finish(inbox, DONE, 8, now)
    study_uid = done.name
    assert inbox.purge(keep_seconds=7 * DAY, keep_failed_seconds=30 * DAY, now=now).studies == 1
    assert inbox.store(study_uid, sop_uid, b"instance") is StoreOutcome.LATE
    assert not inbox.study_dir(study_uid).exists() and inbox.pending_count() == 0
    assert (tmp_path / "work" / "late" / study_uid / f"{sop_uid}.dcm").is_file()


@pytest.mark.parametrize(
    ("keep", "failed"), [(-1, 30), (7, float("nan")), (float("inf"), 30), (True, 30), ("7", 30)]
)
def test_purge_refuses_a_bad_retention(tmp_path: Path, keep: object, failed: object) -> None:
    inbox = Inbox(tmp_path / "work", stable_seconds=0, queue_size=1)
    with pytest.raises(ValueError, match="must be a finite number of seconds >= 0"):
        inbox.purge(keep_seconds=keep, keep_failed_seconds=failed)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# the node


def test_keep_days_0_deletes_a_study_once_sent_but_keeps_a_failed_one(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    sent_node = start_node(keep_days=0)
    paths = study(tmp_path / "a", 2)
    send(sent_node.port, *(dcmread(p) for p in paths))
    wait_until(lambda: len(sent_node.finished) == 1, 30, "the sent study to finish")
    done = sent_node.finished[0].path
    assert sent_node.finished[0].status == DONE
    assert sorted(p.name for p in done.iterdir()) == ["status.json"]
    assert len(json.loads((done / "status.json").read_text())["instances"]) == 2

    failing = start_node(keep_days=0, destination=RecordingDestination(fail=True), send_attempts=1)
    paths = study(tmp_path / "b")
    send(failing.port, dcmread(paths[0]))
    wait_until(lambda: len(failing.finished) == 1, 30, "the failing study to finish")
    assert failing.finished[0].status == FAILED
    assert len(list((failing.finished[0].path / "instances").iterdir())) == 1


def test_the_node_applies_the_default_retention_at_start(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    inbox = Inbox(work, stable_seconds=0, queue_size=8)
    inbox.open()
    now = time.time()
    _, old = _finish(inbox, DONE, 7.01, now)
    _, young = _finish(inbox, DONE, 6.99, now)
    start_node(work_dir=work)  # defaults: keep_days 7, keep_failed_days 30
    wait_until(lambda: not (old / "instances").exists(), 10, "the old images to be deleted")
    assert (old / "status.json").is_file()
    assert (young / "instances").is_dir() and (young / "results" / "sr.dcm").is_file()


def test_the_bundle_is_loaded_once_for_every_study_the_node_processes(
    start_node: Callable[..., DicomNode],
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[object] = []
    real_load = bundle_module.load_bundle

    def counting_load(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "load_bundle", counting_load)
    monkeypatch.setattr(runner_module, "load_bundle", counting_load)
    processor = InferenceProcessor(bundle=tiny_bundle, device="cpu")
    destination = RecordingDestination()
    node = start_node(processor=processor, destination=destination)
    for index, name in enumerate(("a", "b")):  # one after the other: two batches
        send(node.port, dcmread(study(tmp_path / name)[0]))
        wait_until(lambda n=index + 1: len(node.finished) == n, 120, f"study {index + 1} to finish")
    assert [f.status for f in node.finished] == [DONE, DONE]
    assert len(destination.sent) == 2
    assert len(loads) == 1
    assert processor.load() is processor.load()
    assert len(loads) == 1


# --------------------------------------------------------------------------------------------------
# serve flags and configuration


def test_serve_retention_flags_and_configuration_keys(tmp_path: Path) -> None:
    base = ["--work-dir", str(tmp_path), "--dest-ae", "PACS@127.0.0.1:104"]
    defaults = serve.config_from_args(serve.build_parser().parse_args(base))
    assert (defaults.keep_days, defaults.keep_failed_days) == (7.0, 30.0)
    args = serve.build_parser().parse_args([*base, "--keep-days", "0", "--keep-failed-days", "2.5"])
    config = serve.config_from_args(args)
    assert (config.keep_days, config.keep_failed_days) == (0.0, 2.5)
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            serve.build_parser().parse_args([*base, "--keep-days", bad])
    from_file = config_from_mapping({"work_dir": str(tmp_path), "dest_ae": "A@h:1", "keep_days": 3})
    assert from_file.keep_days == 3.0
    for value in (-0.5, float("nan"), True, "7"):
        with pytest.raises(ValueError, match=r"keep_days must be a finite number of days >= 0"):
            NodeConfig(work_dir=tmp_path, destination=StowDestination("http://h/d"), keep_days=value)
