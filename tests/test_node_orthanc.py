"""The node against a real PACS: ``pneumonia-monai serve`` in a subprocess, a private Orthanc, dcmtk senders.

- round trip: ``echoscu`` and ``storescu`` (a JPEG lossless film from ``dcmcjpeg``) to the node, the real
  :func:`run_inference` on a tiny bundle, the SR C-STOREd into Orthanc, in the right study, referencing
  the sent images;
- load: 50 one-image studies from 5 concurrent ``storescu`` processes, exactly one SR each in Orthanc;
- SIGTERM: the study being processed is finished and sent, an acknowledged one not yet stable stays in
  the inbox, exit status 0;
- SIGKILL mid-study, restart on the same work folder, the rest of the study sent: one SR, complete;
- pull mode: a study uploaded to Orthanc, fetched with WADO-RS, processed, its SR stored with STOW-RS.

The tiny bundle is the repository's bundle configuration with ``spatial_size`` 64 and a seeded random
DenseNet121; the node runs with one torch thread (``OMP_NUM_THREADS=1``) on this shared machine.

Every server listens on 127.0.0.1 only and gets its port from the kernel: the node with ``--port 0
--port-file``, Orthanc in a network namespace of its own behind loopback forwarders
(:mod:`pneumonia_monai.devtools.orthanc`).
The node sends a study's results, *then* moves it to ``done/`` (at-least-once): a test that reads
``done/<study>/`` waits (bounded) for its ``status.json``, which appears with the whole folder in one
rename, never for the SR in Orthanc alone, and never sleeps instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import make_cr, referenced_sop_uids
from node_helpers import NODE_AET, dcmtk
from pydicom import dcmread
from pydicom.uid import generate_uid
from repo_paths import REPO

from pneumonia_monai.devtools.netns import interfaces, listening_sockets
from pneumonia_monai.devtools.orthanc import DICOM_PORT, HTTP_PORT, OrthancServer, wait_for
from pneumonia_monai.dicomweb.pull import retrieve_study, store_instances
from pneumonia_monai.node.processor import InferenceProcessor

#: Seconds without a new instance before the node processes a study.
STABLE_SECONDS = 1.0


# --------------------------------------------------------------------------------------------------
# the node as a subprocess


class ServeProcess:
    """``python -m pneumonia_monai serve`` on 127.0.0.1, port picked by the OS, its log in a file."""

    def __init__(self, work_dir: Path, dest_ae: str, bundle: Path, *extra: str) -> None:
        self.work_dir = work_dir
        stem = work_dir.parent / f"{work_dir.name}-{time.monotonic_ns()}"
        self.log_path = stem.with_suffix(".log")
        self.port_file = stem.with_suffix(".port")
        command = [
            sys.executable,
            "-m",
            "pneumonia_monai",
            "serve",
            "--work-dir",
            str(work_dir),
            "--ae-title",
            NODE_AET,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(self.port_file),
            "--dest-ae",
            dest_ae,
            "--bundle",
            str(bundle),
            "--device",
            "cpu",
            "--stable-seconds",
            str(STABLE_SECONDS),
            "--retry-backoff",
            "0.5",
            "-v",
            *extra,
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.port = self._wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _wait_ready(self, timeout: float = 60) -> int:
        """Wait for the port file (written once the port is bound); check the node answers C-ECHO there."""
        if not wait_for(lambda: self.port_file.exists() or self.process.poll() is not None, timeout, 0.05):
            self.kill()
            pytest.fail(f"serve wrote no port file within {timeout} s:\n{self.log()[-3000:]}")
        if self.process.poll() is not None:
            pytest.fail(f"serve exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        port = int(self.port_file.read_text())
        echo = [dcmtk("echoscu"), "-aet", "TESTSCU", "-aec", NODE_AET, "127.0.0.1", str(port)]
        result = subprocess.run(echo, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            self.kill()
            pytest.fail(f"serve does not answer C-ECHO on port {port}: {result.stderr}\n{self.log()[-3000:]}")
        return port

    def wait_finished(self, studies: set[str], timeout: float) -> dict[str, dict]:
        """Wait (bounded) until each study's ``done/`` or ``failed/`` marker exists; return the markers.

        ``<folder>/<study>/status.json`` is written in ``outbox/``, which is then renamed as a whole: once
        it exists, the study's results were sent (done) and its folder is complete.
        """

        def markers() -> dict[str, Path]:
            found = {}
            for study in studies:
                for folder in ("done", "failed"):
                    path = self.work_dir / folder / study / "status.json"
                    if path.is_file():
                        found[study] = path
            return found

        finished = wait_for(lambda: len(markers()) == len(studies), timeout, interval=0.1)
        found = markers()
        assert finished, (
            f"{len(found)}/{len(studies)} studies finished after {timeout} s:\n{self.log()[-3000:]}"
        )
        return {study: json.loads(path.read_text()) for study, path in found.items()}

    def terminate(self, timeout: float = 120) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"serve did not stop within {timeout} s of SIGTERM:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def storescu(port: int, files: Sequence[Path], *extra: str, aet: str = "STORESCU") -> None:
    result = subprocess.run(
        [dcmtk("storescu"), *extra, "-aet", aet, "-aec", NODE_AET, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def orthanc(
    tmp_path_factory: pytest.TempPathFactory, start_orthanc: Callable[..., OrthancServer]
) -> Iterator[OrthancServer]:
    # Only the node (AE title PNEUMONIA, from 127.0.0.1) may store into this Orthanc.
    modalities = {"node": (NODE_AET, "127.0.0.1", 104)}
    with start_orthanc(tmp_path_factory.mktemp("orthanc"), modalities=modalities) as server:
        yield server


@pytest.fixture(scope="module")
def node(
    orthanc: OrthancServer, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """A node sending to Orthanc, shared by the round trip and the load test."""
    work = tmp_path_factory.mktemp("node") / "work"
    dest = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    serve = ServeProcess(work, dest, tiny_bundle, "--batch-studies", "16")
    yield serve
    serve.kill()


def srs_by_study(orthanc: OrthancServer, studies: set[str]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for sr in orthanc.sr_instances():
        if sr["StudyInstanceUID"] in studies:
            found.setdefault(sr["StudyInstanceUID"], []).append(sr)
    return found


def ramp_image(seed: int, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, (size, size)).astype(np.uint16)


# --------------------------------------------------------------------------------------------------
# tests


def test_servers_listen_on_the_loopback_only(node: ServeProcess, orthanc: OrthancServer) -> None:
    # the node: the port of its port file, bound on 127.0.0.1 (this namespace), nowhere else
    assert node.port == int(node.port_file.read_text()) and node.port > 0
    assert [s for s in listening_sockets(node.process.pid) if s[1] == node.port] == [("127.0.0.1", node.port)]
    # Orthanc: its own namespace, whose only interface is the loopback, on its fixed ports there ...
    assert orthanc.process is not None
    ours, theirs = os.readlink("/proc/self/ns/net"), os.readlink(f"/proc/{orthanc.process.pid}/ns/net")
    assert theirs != ours
    assert interfaces(orthanc.process.pid) == {"lo"}
    assert {HTTP_PORT, DICOM_PORT} <= {port for _, port in listening_sockets(orthanc.process.pid)}
    # ... reached from here through two 127.0.0.1 ports the kernel picked, which this process holds
    here = listening_sockets("self")
    for port in (orthanc.http_port, orthanc.dicom_port):
        assert [s for s in here if s[1] == port] == [("127.0.0.1", port)]
    assert orthanc.get_json("/system")["DicomAet"] == "ORTHANC"


def test_round_trip_through_orthanc(node: ServeProcess, orthanc: OrthancServer, tmp_path: Path) -> None:
    study = generate_uid()
    raw = make_cr(tmp_path / "pa.dcm", StudyInstanceUID=study, pixels=ramp_image(1))
    jpeg = tmp_path / "pa-jpeg-lossless.dcm"
    subprocess.run([dcmtk("dcmcjpeg"), str(tmp_path / "pa.dcm"), str(jpeg)], check=True, timeout=60)
    assert str(dcmread(jpeg).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.70"
    second = make_cr(
        tmp_path / "ap.dcm", StudyInstanceUID=study, view="AP", InstanceNumber=2, pixels=ramp_image(2)
    )

    storescu(node.port, [jpeg], "-xs")  # proposes JPEG lossless: the node must accept it as such
    storescu(node.port, [tmp_path / "ap.dcm"])
    # the marker this test reads: the node moves the study to done/ only after the SR was stored
    status = node.wait_finished({study}, timeout=90)[study]
    assert status["status"] == "done" and status["send_attempts"] == 1, status

    (sr_info,) = srs_by_study(orthanc, {study})[study]  # already there: sent before the move
    sr = dcmread(BytesIO(orthanc.instance_file(sr_info["ID"])))
    assert sr.Modality == "SR" and sr.StudyInstanceUID == study
    assert "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription
    assert referenced_sop_uids(sr) == {raw.SOPInstanceUID, second.SOPInstanceUID}
    assert len(orthanc.get_json(f"/dicom-web/studies/{study}/series?Modality=SR")) == 1
    stored = dcmread(node.work_dir / "done" / study / "instances" / f"{raw.SOPInstanceUID}.dcm")
    assert str(stored.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.70"


@pytest.mark.slow
def test_load_50_studies_from_5_concurrent_senders(
    node: ServeProcess, orthanc: OrthancServer, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    n_senders, per_sender = 5, 10
    sent: dict[str, str] = {}  # study -> SOP instance
    folders = []
    for sender in range(n_senders):
        folder = tmp_path / f"sender{sender}"
        for i in range(per_sender):
            ds = make_cr(folder / f"{i}.dcm", pixels=ramp_image(100 * sender + i))
            sent[str(ds.StudyInstanceUID)] = str(ds.SOPInstanceUID)
        folders.append(folder)

    started = time.monotonic()
    senders = [
        subprocess.Popen(
            [
                dcmtk("storescu"),
                "-aet",
                f"LOAD{k}",
                "-aec",
                NODE_AET,
                "127.0.0.1",
                str(node.port),
                "+sd",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k, folder in enumerate(folders)
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err.decode()
    sent_seconds = time.monotonic() - started
    studies = set(sent)
    # wait for the markers read below (done/ or failed/ of every study), not for the SRs alone
    statuses = node.wait_finished(studies, timeout=150)
    elapsed = time.monotonic() - started
    assert {study: status["status"] for study, status in statuses.items()} == dict.fromkeys(studies, "done")

    throughput = len(studies) / elapsed
    record_property("node_load_studies", len(studies))
    record_property("node_load_seconds", round(elapsed, 2))
    record_property("node_load_studies_per_second", round(throughput, 3))
    sys.stderr.write(
        f"\nnode load test: {len(studies)} studies from {n_senders} concurrent storescu, all sent in "
        f"{sent_seconds:.1f} s, all done (SRs in Orthanc) after {elapsed:.1f} s: {throughput:.2f} studies/s\n"
    )

    found = srs_by_study(orthanc, studies)
    assert Counter(len(srs) for srs in found.values()) == {1: len(studies)}  # exactly one SR per study
    for study, (sr_info,) in found.items():
        sr = dcmread(BytesIO(orthanc.instance_file(sr_info["ID"])))
        assert sr.StudyInstanceUID == study and referenced_sop_uids(sr) == {sent[study]}
    assert not list((node.work_dir / "failed").iterdir())
    assert not studies & {p.name for p in (node.work_dir / "inbox").iterdir()}
    assert not studies & {p.name for p in (node.work_dir / "outbox").iterdir()}


def test_sigterm_finishes_the_study_in_progress_and_keeps_the_rest(
    orthanc: OrthancServer, tiny_bundle: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    serve = ServeProcess(work, f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", tiny_bundle)
    try:
        busy = make_cr(tmp_path / "busy.dcm", pixels=ramp_image(7))
        storescu(serve.port, [tmp_path / "busy.dcm"])
        # the worker took the study (its results folder exists): it is being processed
        assert wait_for(lambda: (work / "outbox" / busy.StudyInstanceUID).exists(), timeout=30, interval=0.05)
        waiting = make_cr(tmp_path / "waiting.dcm", pixels=ramp_image(8))
        storescu(serve.port, [tmp_path / "waiting.dcm"])  # acknowledged, not yet stable
        status = serve.terminate()
    finally:
        serve.kill()
    # the node has exited: everything it was going to do is on disk and in Orthanc
    log = serve.log()
    assert status == 0, log[-3000:]
    assert "received SIGTERM: stopping" in log
    assert json.loads((work / "done" / busy.StudyInstanceUID / "status.json").read_text())["status"] == "done"
    assert srs_by_study(orthanc, {busy.StudyInstanceUID})
    kept = work / "inbox" / waiting.StudyInstanceUID / f"{waiting.SOPInstanceUID}.dcm"
    assert dcmread(kept).PixelData == waiting.PixelData  # not lost: resumed at the next start
    assert not srs_by_study(orthanc, {waiting.StudyInstanceUID})
    assert not serve.port_file.exists()  # removed on the way out


def test_sigkill_mid_study_then_restart_gives_one_complete_result(
    orthanc: OrthancServer, tiny_bundle: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    dest = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
    study = generate_uid()
    files = []
    for i in range(3):
        files.append(tmp_path / f"im{i}.dcm")
        make_cr(files[-1], StudyInstanceUID=study, InstanceNumber=i + 1, pixels=ramp_image(20 + i))
    sops = {str(dcmread(p).SOPInstanceUID) for p in files}

    # stable period long enough that the study cannot be processed before the kill
    first = ServeProcess(work, dest, tiny_bundle, "--stable-seconds", "30")
    try:
        storescu(first.port, files[:2])  # two instances acknowledged ...
    finally:
        first.kill()  # ... then SIGKILL, mid-study
    assert first.process.returncode == -signal.SIGKILL
    assert len(list((work / "inbox" / study).glob("*.dcm"))) == 2
    assert not srs_by_study(orthanc, {study})

    second = ServeProcess(work, dest, tiny_bundle, "--stable-seconds", "3")
    try:
        storescu(second.port, files[2:])  # the rest of the study, to the restarted node
        status = second.wait_finished({study}, timeout=90)[study]
    finally:
        exit_status = second.terminate()
    # The node has exited, so nothing more is on its way: what Orthanc holds now is all it will get.
    assert exit_status == 0, second.log()[-3000:]
    assert status["status"] == "done", status
    assert sorted(status["instances"]) == sorted(f"{uid}.dcm" for uid in sops)
    assert "resuming 1 study(ies) left in the inbox" in second.log()
    (sr_info,) = srs_by_study(orthanc, {study})[study]
    sr = dcmread(BytesIO(orthanc.instance_file(sr_info["ID"])))
    assert referenced_sop_uids(sr) == sops


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_pull_mode_through_orthanc_dicomweb(
    orthanc: OrthancServer, tiny_bundle: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    study = generate_uid()
    uploaded = [
        make_cr(
            tmp_path / "up" / f"{i}.dcm",
            StudyInstanceUID=study,
            InstanceNumber=i + 1,
            pixels=ramp_image(40 + i),
        )
        for i in range(2)
    ]
    for i in range(2):
        orthanc.upload(tmp_path / "up" / f"{i}.dcm")

    paths = retrieve_study(orthanc.dicomweb_url, study, tmp_path / "in" / study)
    assert len(paths) == 2
    results = InferenceProcessor(bundle=tiny_bundle, device="cpu").process(
        tmp_path / "in" / study, tmp_path / "out"
    )
    (sr_path,) = results
    assert store_instances(orthanc.dicomweb_url, results) == [str(dcmread(sr_path).SOPInstanceUID)]

    series = orthanc.get_json(f"/dicom-web/studies/{study}/series?Modality=SR")
    assert len(series) == 1
    (sr_info,) = srs_by_study(orthanc, {study})[study]
    sr = dcmread(BytesIO(orthanc.instance_file(sr_info["ID"])))
    assert referenced_sop_uids(sr) == {str(ds.SOPInstanceUID) for ds in uploaded}
