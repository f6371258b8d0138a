"""The DICOM node in-process: Storage SCP, durable inbox, stable studies, worker, retries, late arrivals.

The studies go through the real network path (dcmtk's ``storescu``/``echoscu``, pynetdicom as SCU) into a
:class:`DicomNode` whose processor and destination are test doubles: the processor builds a real SR with
:func:`build_pneumonia_sr`, the destination records what it is given. The real inference and a real
archive are exercised in ``test_node_orthanc.py``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from dicom_factory import make_cr, referenced_sop_uids
from node_helpers import NODE_AET, RecordingDestination, SrProcessor, dcmtk, wait_until
from pydicom import Dataset, dcmread
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage
from repo_paths import REPO, SAMPLE_DICOM

from pneumonia_monai.cli import serve
from pneumonia_monai.devtools.netns import listening_sockets
from pneumonia_monai.devtools.orthanc import refused_port, wait_for
from pneumonia_monai.node import inbox as inbox_module
from pneumonia_monai.node.config import (
    DicomDestination,
    StowDestination,
    config_from_mapping,
    read_config_file,
)
from pneumonia_monai.node.destinations import (
    CStoreDestination,
    SendError,
    SendInterruptedError,
    send_with_retries,
)
from pneumonia_monai.node.inbox import Inbox, StoreOutcome
from pneumonia_monai.node.scp import NATIVE_TRANSFER_SYNTAXES
from pneumonia_monai.node.service import DicomNode


def storescu(
    port: int, files: Sequence[Path], *extra: str, aet: str = "STORESCU"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [dcmtk("storescu"), *extra, "-aet", aet, "-aec", NODE_AET, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------------------------------
# test doubles


class BatchSrProcessor(SrProcessor):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(gate=gate)
        self.batches: list[list[str]] = []

    def process_many(self, study_dirs: Sequence[Path], out_dir: Path) -> dict[Path, list[Path] | Exception]:
        self.batches.append([d.name for d in study_dirs])
        return {d: [self._sr(d, out_dir)] for d in study_dirs}


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def node_defaults() -> dict[str, Any]:
    """conftest's start_node: a node whose processor writes a real SR, sent to a recording double."""
    return {"processor": SrProcessor, "destination": RecordingDestination}


def study_files(folder: Path, n_images: int) -> list[Path]:
    """Write ``n_images`` small CR images of one new study into ``folder``."""
    study_uid = generate_uid()
    paths = []
    for i in range(n_images):
        paths.append(folder / f"im{i}.dcm")
        make_cr(paths[-1], StudyInstanceUID=study_uid, InstanceNumber=i + 1)
    return paths


def uid_of(path: Path, keyword: str = "StudyInstanceUID") -> str:
    return str(dcmread(path, stop_before_pixels=True)[keyword].value)


# --------------------------------------------------------------------------------------------------
# transfer syntaxes


#: The dcmtk storescu profile the README gives (``-xf scripts/storescu-chest.cfg Chest``): a presentation
#: context per chest film SOP class and transfer syntax the node accepts.
STORESCU_PROFILE = REPO / "scripts" / "storescu-chest.cfg"


@pytest.fixture
def compressed_study(tmp_path: Path) -> dict[str, Path]:
    """One CR study in six transfer syntaxes: JPEG lossless .57/.70, JPEG-LS, RLE (dcmtk), J2K, deflated."""
    src = tmp_path / "src"
    raw = study_files(src / "raw", 6)
    out = tmp_path / "compressed"
    out.mkdir()
    tools = {
        "1.2.840.10008.1.2.4.57": [dcmtk("dcmcjpeg"), "+el"],
        "1.2.840.10008.1.2.4.70": [dcmtk("dcmcjpeg"), "+e1"],
        "1.2.840.10008.1.2.4.80": [dcmtk("dcmcjpls")],
        "1.2.840.10008.1.2.5": [dcmtk("dcmcrle")],
    }
    files = {}
    for (syntax, command), path in zip(tools.items(), raw[:4], strict=True):
        target = out / f"{syntax}.dcm"
        subprocess.run([*command, str(path), str(target)], check=True, capture_output=True, timeout=60)
        files[syntax] = target
    ds = dcmread(raw[4])
    ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    files[JPEG2000Lossless] = out / "j2k.dcm"
    ds.save_as(files[JPEG2000Lossless], enforce_file_format=True)
    ds = dcmread(raw[5])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    files["1.2.840.10008.1.2.1.99"] = out / "deflated.dcm"
    ds.save_as(files["1.2.840.10008.1.2.1.99"], enforce_file_format=True)
    for syntax, path in files.items():
        assert str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    return files


def test_compressed_instances_are_accepted_and_stored_as_received(
    start_node: Callable[..., DicomNode], compressed_study: dict[str, Path], tmp_path: Path
) -> None:
    node = start_node(stable_seconds=60)  # keep them in the inbox
    result = storescu(node.port, list(compressed_study.values()), "-xf", str(STORESCU_PROFILE), "Chest")
    assert result.returncode == 0, result.stderr

    study_uid = uid_of(next(iter(compressed_study.values())))
    inbox = tmp_path / "work0" / "inbox" / study_uid
    for syntax, sent_path in compressed_study.items():
        sent = dcmread(sent_path)
        stored = dcmread(inbox / f"{sent.SOPInstanceUID}.dcm")
        # no transcoding on the way: same transfer syntax, same encoded pixel data
        assert str(stored.file_meta.TransferSyntaxUID) == syntax
        assert stored.file_meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
        assert stored.PixelData == sent.PixelData
        assert (stored.pixel_array == sent.pixel_array).all()
    assert node.scp.counts["stored"] == len(compressed_study)
    assert not list(inbox.glob("*.tmp")) and not list(inbox.glob(".*"))


def test_the_readme_storescu_line_sends_the_mixed_sample_studies(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    """The samples mix uncompressed, JPEG 2000 and RLE films: plain storescu, or one -x option, fails."""
    files = sorted(SAMPLE_DICOM.glob("*/*.dcm"))
    syntaxes = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in files}
    assert {JPEG2000Lossless, RLELossless, "1.2.840.10008.1.2.1"} <= syntaxes
    node = start_node(stable_seconds=60)
    assert storescu(node.port, files, "-xv").returncode != 0  # J2K proposed, the RLE film fails
    result = storescu(node.port, files, "-xf", str(STORESCU_PROFILE), "Chest", aet="PACS")
    assert result.returncode == 0, result.stderr
    stored = {p.name for p in (tmp_path / "work0" / "inbox").glob("*/*.dcm")}
    assert stored == {f"{uid_of(p, 'SOPInstanceUID')}.dcm" for p in files}


def test_without_the_compressed_contexts_a_jpeg_lossless_film_is_refused(
    start_node: Callable[..., DicomNode], compressed_study: dict[str, Path], tmp_path: Path
) -> None:
    """The control: an SCP offering the uncompressed syntaxes only cannot take the dcmcjpeg file."""
    node = start_node(transfer_syntaxes=NATIVE_TRANSFER_SYNTAXES, stable_seconds=60)
    result = storescu(
        node.port,
        [compressed_study["1.2.840.10008.1.2.4.57"]],
        "-xf",
        str(STORESCU_PROFILE),
        "Chest",
    )
    assert result.returncode != 0
    assert node.scp.counts["stored"] == 0


# --------------------------------------------------------------------------------------------------
# association and C-STORE handling


def test_echo_and_calling_ae_restriction(
    start_node: Callable[..., DicomNode], caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(allowed_calling_aes=("MODALITY1", "PACS"))
    echo = [dcmtk("echoscu"), "-aec", NODE_AET, "127.0.0.1", str(node.port)]
    ok = subprocess.run([*echo, "-aet", "PACS"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    expected = "rejected: calling AE title 'INTRUDER' is not one of ['MODALITY1', 'PACS']"

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "pneumonia_monai.node.scp"]

    with caplog.at_level("WARNING", logger="pneumonia_monai.node.scp"):
        refused = subprocess.run([*echo, "-aet", "INTRUDER"], capture_output=True, text=True, timeout=30)
        # pynetdicom sends A-ASSOCIATE-RJ before it fires EVT_REJECTED, so echoscu may exit before
        # the node's reactor thread has logged the reason: wait for it (bounded) inside the capture.
        wait_until(lambda: any(expected in m for m in messages()), 10, "the rejection's log line", messages)
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr or "rejected" in refused.stderr.lower()
    assert any(expected in m for m in messages()), messages()


def _scu_store(port: int, ds: Dataset) -> int:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_success_is_answered_only_once_the_instance_is_durably_on_disk(
    start_node: Callable[..., DicomNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(stable_seconds=60)
    synced: list[str] = []  # what each fsync flushed (pneumonia_monai.atomic does them)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ds = make_cr(tmp_path / "one.dcm")
    assert _scu_store(node.port, ds) == 0x0000
    # when the Success response reached us, the file was in place, complete, and fsynced with its folder
    stored = tmp_path / "work0" / "inbox" / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert dcmread(stored).PixelData == ds.PixelData
    # the new study folder (in inbox/), the file's data (its temporary name), then the folder of its name
    assert synced[-1] == str(stored.parent)
    assert Path(synced[-2]).parent == stored.parent and Path(synced[-2]).name.endswith(".tmp")
    assert str(stored.parent.parent) in synced[:-2]


def test_write_failure_answers_out_of_resources(
    start_node: Callable[..., DicomNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(stable_seconds=60)

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inbox_module, "write_durable", disk_full)
    ds = make_cr(tmp_path / "one.dcm")
    assert _scu_store(node.port, ds) == 0xA700
    assert node.scp.counts["error"] == 1
    assert not list((tmp_path / "work0" / "inbox").rglob("*.dcm"))


def test_instance_without_study_uid_is_refused(start_node: Callable[..., DicomNode], tmp_path: Path) -> None:
    node = start_node(stable_seconds=60)
    ds = make_cr(tmp_path / "one.dcm", StudyInstanceUID=None)
    assert _scu_store(node.port, ds) == 0xC000
    assert node.scp.counts["refused"] == 1
    assert not list((tmp_path / "work0" / "inbox").rglob("*.dcm"))


# --------------------------------------------------------------------------------------------------
# stable studies, one result each


def test_each_stable_study_is_processed_once_in_the_worker_and_its_sr_sent(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    processor, destination = SrProcessor(), RecordingDestination()
    node = start_node(processor=processor, destination=destination)
    a = study_files(tmp_path / "a", 3)
    b = study_files(tmp_path / "b", 1)
    assert storescu(node.port, a + b).returncode == 0
    assert node.wait_idle(30)

    sent = {study: refs for study, refs, _ in destination.sent}
    assert len(destination.sent) == 2
    assert sent == {
        uid_of(a[0]): {uid_of(p, "SOPInstanceUID") for p in a},
        uid_of(b[0]): {uid_of(b[0], "SOPInstanceUID")},
    }
    assert {thread for _, _, thread in processor.calls} == {"node-worker"}  # never in a C-STORE handler
    work = tmp_path / "work0"
    for files in (a, b):
        done = work / "done" / uid_of(files[0])
        status = json.loads((done / "status.json").read_text())
        assert status["status"] == "done" and status["send_attempts"] == 1
        assert sorted(status["instances"]) == sorted(f"{uid_of(p, 'SOPInstanceUID')}.dcm" for p in files)
        assert len(list((done / "instances").glob("*.dcm"))) == len(files)
        assert len(list((done / "results").rglob("*.dcm"))) == 1
    assert not list((work / "inbox").iterdir()) and not list((work / "outbox").iterdir())


def test_late_arrivals_are_kept_aside_and_copies_discarded(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    destination = RecordingDestination()
    node = start_node(destination=destination)
    a = study_files(tmp_path / "a", 2)
    assert storescu(node.port, a).returncode == 0
    assert node.wait_idle(30)
    study = uid_of(a[0])

    late = make_cr(tmp_path / "late.dcm", StudyInstanceUID=study)
    assert storescu(node.port, [tmp_path / "late.dcm", a[0]]).returncode == 0  # a new image, and a re-send
    # A second result, if these could cause one, would be made no later than that of a study sent after
    # them (stable studies are taken oldest first): wait for that one, rather than for some time.
    after = study_files(tmp_path / "after", 1)
    assert storescu(node.port, after).returncode == 0
    assert node.wait_idle(30)
    assert [s for s, _, _ in destination.sent] == [study, uid_of(after[0])]
    assert node.scp.counts == {"stored": 3, "late": 1, "duplicate": 1, "refused": 0, "error": 0}
    assert (tmp_path / "work0" / "late" / study / f"{late.SOPInstanceUID}.dcm").is_file()
    assert not (tmp_path / "work0" / "inbox" / study).exists()


def test_stores_succeed_while_the_worker_is_busy_and_the_queue_full(
    start_node: Callable[..., DicomNode], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()
    processor, destination = SrProcessor(gate=gate), RecordingDestination()
    node = start_node(processor=processor, destination=destination, queue_size=1, stable_seconds=0.2)
    first = study_files(tmp_path / "s0", 1)
    assert storescu(node.port, first).returncode == 0
    assert processor.started.wait(20)  # the worker is now blocked inside the processor

    others = [study_files(tmp_path / f"s{i}", 1)[0] for i in range(1, 4)]
    with caplog.at_level("INFO", logger="pneumonia_monai.node.inbox"):
        started = time.monotonic()
        result = storescu(node.port, others)
        assert result.returncode == 0, result.stderr  # acknowledged although nothing can be processed
        assert time.monotonic() - started < 20
        # let them become stable (bounded wait): one fits the queue, two wait in the inbox
        wait_until(
            lambda: any("work queue full (1)" in r.getMessage() for r in caplog.records),
            15,
            "the inbox's 'work queue full' log line",
        )
    assert any("work queue full (1)" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "work0" / "inbox").iterdir())) == 4
    gate.set()
    assert node.wait_idle(30)
    assert sorted(s for s, _, _ in destination.sent) == sorted(uid_of(p) for p in [*first, *others])


def test_ready_studies_are_batched_but_get_one_result_each(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    gate = threading.Event()
    processor, destination = BatchSrProcessor(gate), RecordingDestination()
    node = start_node(processor=processor, destination=destination, stable_seconds=0.2)
    blocker = study_files(tmp_path / "blocker", 1)
    assert storescu(node.port, blocker).returncode == 0
    assert processor.started.wait(20)  # the worker is busy with the blocker (alone: process())
    files = [study_files(tmp_path / f"s{i}", 2) for i in range(3)]
    assert storescu(node.port, [p for study in files for p in study]).returncode == 0
    # all three become stable and wait in the queue
    wait_until(lambda: node.inbox.queued_count() >= 3, 15, "three queued studies", node.inbox.queued_count)
    assert node.inbox.queued_count() == 3
    gate.set()
    assert node.wait_idle(30)
    assert len(processor.batches) == 1  # the three studies, in one run of the model
    assert sorted(processor.batches[0]) == sorted(uid_of(study[0]) for study in files)
    assert sorted(s for s, _, _ in destination.sent) == sorted(uid_of(p[0]) for p in [blocker, *files])
    for study in files:
        results = tmp_path / "work0" / "done" / uid_of(study[0]) / "results"
        (sr,) = results.rglob("*.dcm")
        assert uid_of(sr) == uid_of(study[0])
        assert referenced_sop_uids(dcmread(sr)) == {uid_of(p, "SOPInstanceUID") for p in study}


# --------------------------------------------------------------------------------------------------
# failures


def test_failed_sends_are_retried_with_backoff_then_the_study_fails(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    destination = RecordingDestination(failures=100)
    node = start_node(destination=destination, send_attempts=3, retry_backoff_seconds=0.05)
    a = study_files(tmp_path / "a", 1)
    assert storescu(node.port, a).returncode == 0
    assert node.wait_idle(30)
    assert destination.attempts == 3
    failed = tmp_path / "work0" / "failed" / uid_of(a[0])
    reason = (failed / "reason.txt").read_text()
    assert "destination down (attempt 3)" in reason and "gave up after 3 attempt(s)" in reason
    assert json.loads((failed / "status.json").read_text())["status"] == "failed"
    assert len(list((failed / "results").rglob("*.dcm"))) == 1  # kept, to be sent by hand
    assert len(list((failed / "instances").glob("*.dcm"))) == 1


def test_a_send_that_succeeds_on_the_third_attempt_is_done(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    destination = RecordingDestination(failures=2)
    node = start_node(destination=destination, send_attempts=5)
    a = study_files(tmp_path / "a", 1)
    assert storescu(node.port, a).returncode == 0
    assert node.wait_idle(30)
    status = json.loads((tmp_path / "work0" / "done" / uid_of(a[0]) / "status.json").read_text())
    assert status["send_attempts"] == 3 and len(destination.sent) == 1


def test_send_with_retries_waits_with_exponential_backoff() -> None:
    destination = RecordingDestination(failures=3)
    started = time.monotonic()
    assert send_with_retries(destination, [], attempts=4, backoff_seconds=0.1) == 4
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4 - 0.01
    stop = threading.Event()
    stop.set()
    with pytest.raises(SendInterruptedError):
        send_with_retries(RecordingDestination(failures=1), [], attempts=3, backoff_seconds=10, stop=stop)


def test_processing_error_fails_the_study_with_its_reason(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    destination = RecordingDestination()
    node = start_node(processor=SrProcessor(fail=True), destination=destination)
    a = study_files(tmp_path / "a", 1)
    assert storescu(node.port, a).returncode == 0
    assert node.wait_idle(30)
    assert not destination.sent
    reason = (tmp_path / "work0" / "failed" / uid_of(a[0]) / "reason.txt").read_text()
    assert reason.strip() == "processing failed: model exploded"


# --------------------------------------------------------------------------------------------------
# inbox: stability, bounded queue, restart recovery (fake clock)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_inbox_stability_and_bounded_queue(tmp_path: Path) -> None:
    clock = FakeClock()
    inbox = Inbox(tmp_path, stable_seconds=10, queue_size=1, clock=clock)
    assert inbox.open() == []
    assert inbox.store("1.2.3", "1.2.3.1", b"first") is StoreOutcome.STORED
    clock.now += 5
    assert inbox.store("1.2.4", "1.2.4.1", b"second") is StoreOutcome.STORED
    clock.now += 6  # 1.2.3 quiet for 11 s, 1.2.4 for 6 s
    assert inbox.poll() == ["1.2.3"]
    clock.now += 1
    assert inbox.store("1.2.3", "1.2.3.2", b"more") is StoreOutcome.STORED  # queued, not started: still taken
    clock.now += 10
    assert inbox.poll() == []  # 1.2.4 is stable but the queue (size 1) is full
    assert inbox.next_studies(4, timeout=0) == ["1.2.3"]
    assert inbox.store("1.2.3", "1.2.3.3", b"late") is StoreOutcome.LATE
    assert inbox.store("1.2.3", "1.2.3.2", b"copy") is StoreOutcome.DUPLICATE
    assert inbox.poll() == ["1.2.4"]
    assert sorted(p.name for p in (tmp_path / "inbox" / "1.2.3").iterdir()) == ["1.2.3.1.dcm", "1.2.3.2.dcm"]
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        inbox.store("../../etc", "1.2", b"x")


def test_inbox_restart_recovery(tmp_path: Path) -> None:
    clock = FakeClock()
    work = tmp_path / "work"
    first = Inbox(work, stable_seconds=10, queue_size=4, clock=clock)
    first.open()
    for study in ("1.1", "1.2", "1.3"):
        first.store(study, f"{study}.1", b"data")
    clock.now += 11
    assert first.poll() == ["1.1", "1.2", "1.3"]
    assert first.next_studies(2, timeout=0) == ["1.1", "1.2"]
    # 1.1: results sent, crash before the move to done/ (status.json written)
    (work / "outbox" / "1.1" / "results" / "sr.dcm").write_bytes(b"sr")
    (work / "outbox" / "1.1" / "status.json").write_text(json.dumps({"status": "done"}))
    # 1.2: crash while processing (results not sent); 1.3: a partial file of a C-STORE cut short
    (work / "outbox" / "1.2" / "results" / "partial.dcm").write_bytes(b"half")
    (work / "inbox" / "1.3" / ".1.3.2.dcm.abcd.tmp").write_bytes(b"half")

    second = Inbox(work, stable_seconds=10, queue_size=4, clock=clock)
    assert second.open() == ["1.2", "1.3"]
    assert (work / "done" / "1.1" / "instances" / "1.1.1.dcm").is_file()
    assert (work / "done" / "1.1" / "results" / "sr.dcm").is_file()
    assert not (work / "outbox" / "1.2").exists()
    assert not list((work / "inbox" / "1.3").glob("*.tmp"))
    assert second.poll() == []  # recovered studies wait a full stable period after the restart
    clock.now += 10
    assert second.poll() == ["1.2", "1.3"]
    assert second.store("1.1", "1.1.9", b"late") is StoreOutcome.LATE


# --------------------------------------------------------------------------------------------------
# configuration and command line


def test_config_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "ae_title: NODE1\nport: 4242\nwork_dir: spool\nallowed_calling_aes: [PACS]\n"
        "stable_seconds: 3\ndest_ae: PACS@[::1]:104\n"
    )
    values = read_config_file(path)
    assert values["work_dir"] == str(tmp_path / "spool")
    config = config_from_mapping(values)
    assert config.destination == DicomDestination("PACS", "::1", 104)
    assert str(config.destination) == "PACS@[::1]:104"
    assert config.allowed_calling_aes == ("PACS",) and config.stable_seconds == 3.0

    args = serve.build_parser().parse_args(
        [
            "--config",
            str(path),
            "--port",
            "0",
            "--port-file",
            "run/node.port",
            "--allow-ae",
            "A",
            "--allow-ae",
            "B",
            "--dest-stow",
            "http://u:p@h/dw",
        ]
    )
    assert args.port == 0 and args.port_file == Path("run/node.port")
    merged = serve.config_from_args(args)
    assert merged.port == 0 and merged.allowed_calling_aes == ("A", "B") and merged.ae_title == "NODE1"
    assert (
        merged.destination == StowDestination("http://u:p@h/dw") and str(merged.destination) == "http://h/dw"
    )

    path.write_text("work_dir: x\ndest_ae: A@h:1\nstable_secs: 3\n")
    with pytest.raises(ValueError, match="stable_secs"):
        read_config_file(path)
    for bad in ("PACS", "PACS@host", "PACS@host:0", "A\\B@h:1", "WAYTOOLONGAETITLE1@h:1"):
        with pytest.raises(ValueError):
            DicomDestination.parse(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["--work-dir", "W"],  # no destination
        ["--work-dir", "W", "--dest-ae", "nonsense"],
        ["--work-dir", "W", "--dest-stow", "ftp://host/"],
        ["--work-dir", "W", "--dest-ae", "A@h:1", "--stable-seconds", "-1"],
        ["--work-dir", "W", "--dest-ae", "A@h:1", "--bundle", "no/such/bundle"],
        ["--work-dir", "W", "--dest-ae", "A@h:1", "--port", "-1"],
        ["--work-dir", "W", "--dest-ae", "A@h:1", "--port", "0", "--port-file", "."],  # cannot be replaced
    ],
)
def test_serve_refuses_a_bad_configuration(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert serve.main(argv) == 2
    assert not (tmp_path / "W").exists()


def test_serve_port_0_is_reported_in_the_port_file(tmp_path: Path) -> None:
    """``serve --port 0 --port-file``: the port the OS picked, written once bound, removed on stop."""
    port_file = tmp_path / "node.port"
    port_file.write_text("1\n")  # a stale file of an earlier run: never to be read as this run's port
    log_path = tmp_path / "serve.log"
    with refused_port() as dest_port, log_path.open("wb") as log:
        command = [
            sys.executable, "-m", "pneumonia_monai", "serve", "--work-dir", str(tmp_path / "work"),
            "--ae-title", NODE_AET, "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--dest-ae", f"DEST@127.0.0.1:{dest_port}", "--stable-seconds", "60", "-v",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:

            def reported() -> str:
                try:
                    text = port_file.read_text()
                except FileNotFoundError:
                    return ""
                return text if text != "1\n" else ""

            assert wait_for(lambda: reported() or process.poll() is not None, timeout=60, interval=0.05)
            text = reported()
            assert text, f"no port reported (exit {process.poll()}):\n{log_path.read_text()[-3000:]}"
            port = int(text)
            assert text == f"{port}\n" and 0 < port < 65536
            # written once bound: the node answers there at once, listening on 127.0.0.1 only
            echo = [dcmtk("echoscu"), "-aet", "TESTSCU", "-aec", NODE_AET, "127.0.0.1", str(port)]
            result = subprocess.run(echo, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            assert [s for s in listening_sockets(process.pid) if s[1] == port] == [("127.0.0.1", port)]
            assert sorted(p.name for p in tmp_path.iterdir()) == ["node.port", "serve.log", "work"]  # no tmp
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    log_text = log_path.read_text()
    assert f"listening port {port} written to {port_file}" in log_text
    assert f"listening on 127.0.0.1:{port}" in log_text
    assert not port_file.exists()  # removed on stop: a port file is there only while the node listens


def test_serve_exits_2_when_the_port_file_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    stopped: list[DicomNode] = []
    real_stop = DicomNode.stop

    def disk_full(path: Path, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    def stop(self: DicomNode, **kwargs: float) -> bool:
        stopped.append(self)
        return real_stop(self, **kwargs)

    monkeypatch.setattr(serve, "write_bytes_atomic", disk_full)
    monkeypatch.setattr(DicomNode, "stop", stop)
    argv = ["--work-dir", "W", "--dest-ae", "A@127.0.0.1:9", "--port", "0", "--port-file", "node.port"]
    with caplog.at_level("ERROR", logger="pneumonia_monai.cli.serve"):
        assert serve.main(argv) == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "pneumonia_monai.cli.serve"]
    assert any("cannot write the port file node.port: [Errno 28]" in m for m in messages), messages
    assert len(stopped) == 1  # the node that had started listening was stopped
    assert not (tmp_path / "node.port").exists()


# --------------------------------------------------------------------------------------------------
# the C-STORE sender, against the node's own SCP


def test_cstore_destination_sends_in_the_files_own_syntax_and_reports_refusals(
    start_node: Callable[..., DicomNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = start_node(stable_seconds=60)
    files = study_files(tmp_path / "a", 2)
    rle = make_cr(tmp_path / "rle.dcm", StudyInstanceUID=uid_of(files[0]), transfer_syntax=RLELossless)
    sender = CStoreDestination(
        DicomDestination(NODE_AET, "127.0.0.1", receiver.port), calling_ae_title="SENDER"
    )
    sender.send([*files, tmp_path / "rle.dcm"])
    stored = tmp_path / "work0" / "inbox" / uid_of(files[0])
    assert len(list(stored.glob("*.dcm"))) == 3
    assert dcmread(stored / f"{rle.SOPInstanceUID}.dcm").file_meta.TransferSyntaxUID == RLELossless

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inbox_module, "write_durable", disk_full)
    with pytest.raises(SendError, match=r"status 0xA700 \(Failure\)"):
        sender.send(files[:1])
    with refused_port() as port:
        nobody = CStoreDestination(DicomDestination(NODE_AET, "127.0.0.1", port), calling_ae_title="SENDER")
        with pytest.raises(SendError, match="no association"):
            nobody.send(files[:1])
    (tmp_path / "note.txt").write_text("not DICOM")
    with pytest.raises(SendError, match="not a readable DICOM file"):
        sender.send([tmp_path / "note.txt"])


def test_stop_refuses_new_associations_and_lets_open_ones_finish(
    start_node: Callable[..., DicomNode], tmp_path: Path
) -> None:
    node = start_node(stable_seconds=60)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET)
    assert assoc.is_established
    stopper = threading.Thread(target=node.stop, kwargs={"association_grace": 20, "drain_timeout": 5})
    stopper.start()
    try:

        def refused() -> bool:
            other = AE(ae_title="LATECOMER")
            other.add_requested_context(ComputedRadiographyImageStorage)
            attempt = other.associate("127.0.0.1", node.port, ae_title=NODE_AET)
            accepted = attempt.is_established
            if accepted:
                attempt.release()
            return not accepted

        wait_until(refused, 10, "a new association to be refused after stop() (the listener closes first)")
        ds = make_cr(tmp_path / "in-flight.dcm")
        assert assoc.send_c_store(ds).Status == 0x0000  # the open association is served to the end
    finally:
        assoc.release()
        stopper.join(30)
    assert not stopper.is_alive()
    assert (tmp_path / "work0" / "inbox" / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm").is_file()
