"""The node under hostile senders (issue 10): held connections, random PDUs, malformed AE titles,
a corrupt outbox entry, a study fed for ever, an unusable bundle, and result UIDs across a crash.

Every server listens on 127.0.0.1 and takes its port from the server itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_helpers import NODE_AET, RecordingDestination, SrProcessor, dcmtk, wait_until
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage

from pneumonia_monai.node.config import NodeConfig, StowDestination
from pneumonia_monai.node.gate import PreAssociationGate
from pneumonia_monai.node.inbox import Inbox
from pneumonia_monai.node.service import DicomNode

#: The issue's bound on a legitimate C-ECHO under the connection attack.
ECHO_BOUND_S = 3.0


@pytest.fixture
def node_defaults() -> dict[str, Any]:
    """conftest's start_node: a node whose processor writes a real SR, sent to a recording double."""
    return {"processor": SrProcessor, "destination": RecordingDestination}


def echo(port: int) -> tuple[float, subprocess.CompletedProcess]:
    """One dcmtk ``echoscu`` (its own association); return its wall time and result."""
    start = time.monotonic()
    result = subprocess.run(
        [dcmtk("echoscu"), "-aet", "ECHOSCU", "-aec", NODE_AET, "-to", "10", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return time.monotonic() - start, result


class Attack:
    """Connections held open against ``port``: idle ones, trickling ones, or random-byte senders.

    Each slot reconnects as soon as the server closes it, so the pressure lasts as long as the attack.
    """

    def __init__(self, port: int, *, idle: int = 0, trickle: int = 0, random_pdus: int = 0) -> None:
        self.port = port
        self.stop = threading.Event()
        self.connections = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._idle, daemon=True) for _ in range(idle)]
        self.threads += [threading.Thread(target=self._trickle, daemon=True) for _ in range(trickle)]
        self.threads += [threading.Thread(target=self._random, daemon=True) for _ in range(random_pdus)]

    def __enter__(self) -> Attack:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return None
        with self._lock:
            self.connections += 1
        return sock

    def _closed_by_peer(self, sock: socket.socket, wait: float) -> bool:
        sock.settimeout(wait)
        try:
            return sock.recv(4096) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    def _idle(self) -> None:
        while not self.stop.is_set():
            sock = self._connect()
            if sock is None:
                continue
            with sock:
                while not self.stop.is_set() and not self._closed_by_peer(sock, 0.2):
                    pass

    def _trickle(self) -> None:
        """An A-ASSOCIATE-RQ header announcing 4 KB, then one byte every 5 s."""
        while not self.stop.is_set():
            sock = self._connect()
            if sock is None:
                continue
            with sock:
                try:
                    sock.sendall(struct.pack(">BBL", 0x01, 0, 4096))
                    # a byte every 5 s, reconnecting as soon as the server closes the connection
                    while not self.stop.is_set() and not self._closed_by_peer(sock, 5):
                        sock.sendall(b"\0")
                except OSError:
                    continue

    def _random(self) -> None:
        while not self.stop.is_set():
            sock = self._connect()
            if sock is None:
                continue
            with sock:
                try:
                    sock.sendall(os.urandom(64))
                    self._closed_by_peer(sock, 1.0)
                except OSError:
                    continue


def test_idle_and_trickling_connections_do_not_starve_a_real_echo(
    start_node: Callable[..., DicomNode],
) -> None:
    """12 idle and 4 trickling connections held open (re-opened when closed), for longer than the
    request timeout: every legitimate C-ECHO is answered within 3 s (the default limits)."""
    node = start_node(max_associations=10)
    gate = node.scp.gate
    latencies = []
    with Attack(node.port, idle=12, trickle=4) as attack:
        wait_until(
            lambda: gate.pending >= 16,
            20,
            "the 16 attack connections to be pending",
            lambda: (gate.pending, gate.counts, attack.connections),
        )
        pending = []  # the attack connections held at each echo (they time out and come back)
        deadline = time.monotonic() + gate.request_timeout + 3
        while time.monotonic() < deadline or len(latencies) < 5:
            pending.append(gate.pending)
            elapsed, result = echo(node.port)
            assert result.returncode == 0, result.stdout + result.stderr
            latencies.append(elapsed)
        assert gate.counts["timeout"] >= 16  # each attack socket was closed at the deadline ...
        assert attack.connections > 16  # ... and came back
    assert max(latencies) < ECHO_BOUND_S, latencies
    assert sum(pending) / len(pending) >= 12, pending  # the attack held on while the echoes went through
    print(
        f"echo under 12 idle + 4 trickling: n={len(latencies)} max={max(latencies):.3f} s, pending {pending}"
    )


def test_the_gate_evicts_the_oldest_pending_connection_when_full() -> None:
    gate = PreAssociationGate(request_timeout=30, max_pending=2)
    pairs = [socket.socketpair() for _ in range(3)]
    reasons: dict[int, str | None] = {}

    def wait(index: int) -> None:
        reasons[index] = gate.wait_for_request(pairs[index][0])

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(3)]
    for index in (0, 1):
        threads[index].start()
        wait_until(lambda index=index: gate.pending == index + 1, 10, f"connection {index} to be pending")
    threads[2].start()  # a third one closes the oldest, the first
    threads[0].join(10)
    assert reasons[0] is not None and reasons[0].startswith("evicted")
    request = _associate_rq(NODE_AET.encode(), b"SENDER")
    for index in (1, 2):
        pairs[index][1].sendall(request)
        threads[index].join(10)
        assert reasons[index] is None
    assert pairs[1][0].recv(len(request)) == request  # peeked, never consumed
    assert gate.counts["evicted"] == 1 and gate.counts["admitted"] == 2
    for pair in pairs:
        for sock in pair:
            sock.close()


def test_random_byte_pdus_never_make_a_real_echo_fail(start_node: Callable[..., DicomNode]) -> None:
    node = start_node(max_associations=4)
    latencies = []
    with Attack(node.port, random_pdus=12):
        wait_until(lambda: node.scp.gate.counts["not-a-request"] > 12, 20, "random PDUs to be refused")
        for _ in range(8):
            elapsed, result = echo(node.port)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Local Limit Exceeded" not in result.stdout + result.stderr
            latencies.append(elapsed)
    assert max(latencies) < ECHO_BOUND_S, latencies


def _associate_rq(called: bytes, calling: bytes) -> bytes:
    """A minimal A-ASSOCIATE-RQ PDU (application context only) with the given raw AE title fields."""
    context = b"1.2.840.10008.3.1.1.1"
    item = struct.pack(">BBH", 0x10, 0, len(context)) + context
    body = struct.pack(">HH", 1, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16] + bytes(32) + item
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


@pytest.mark.parametrize(
    ("called", "calling", "which", "reason_code"),
    [
        (NODE_AET.encode(), b"BAD\\TITLE", "calling", 3),
        (NODE_AET.encode(), b" " * 16, "calling", 3),
        (b"PNEU\x01MONIA", b"SENDER", "called", 7),
    ],
)
def test_a_malformed_ae_title_is_rejected_with_a_log_line(
    start_node: Callable[..., DicomNode], caplog, called: bytes, calling: bytes, which: str, reason_code: int
) -> None:
    node = start_node()
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.node"):
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            sock.sendall(_associate_rq(called, calling))
            reply = sock.recv(64)
        wait_until(lambda: "is not a valid AE title" in caplog.text, 10, "the rejection's log line")
    assert reply[:1] == b"\x03" and reply[-1] == reason_code  # A-ASSOCIATE-RJ, AE title not recognised
    assert f"rejected: the {which} AE title" in caplog.text
    _, result = echo(node.port)  # and the node still serves
    assert result.returncode == 0


def test_gate_validates_its_limits() -> None:
    with pytest.raises(ValueError, match="request_timeout must be a positive number of seconds, got 0"):
        PreAssociationGate(request_timeout=0, max_pending=4)
    with pytest.raises(ValueError, match="max_pending must be a positive int, got 0"):
        PreAssociationGate(request_timeout=1, max_pending=0)
    with pytest.raises(ValueError, match="network_timeout must be a number of seconds > 0"):
        NodeConfig(work_dir=Path("w"), destination=StowDestination("http://h/x"), network_timeout=0)


def test_an_established_association_gets_the_configured_timeouts(
    start_node: Callable[..., DicomNode],
) -> None:
    node = start_node(acse_timeout=7, dimse_timeout=8, network_timeout=9)
    assert (node.scp.ae.acse_timeout, node.scp.ae.dimse_timeout, node.scp.ae.network_timeout) == (7, 8, 9)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ComputedRadiographyImageStorage)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AET)
    assert assoc.is_established
    wait_until(lambda: bool(node.scp.ae.active_associations), 10, "the acceptor association")
    acceptor = node.scp.ae.active_associations[0]
    assert (acceptor.acse_timeout, acceptor.dimse_timeout, acceptor.network_timeout) == (7, 8, 9)
    assoc.release()


# --------------------------------------------------------------------------------------------------
# the node as a process, sending to a destination of the test's own


class RecordingSCP:
    """A Storage SCP on 127.0.0.1 (port from the server) keeping what it stores by SOP Instance UID.

    With ``hold_first``, the first C-STORE is stored and then its reply held until :attr:`release` is set,
    as a PACS that has the object but has not answered yet.
    """

    def __init__(self, *, hold_first: bool = False) -> None:
        from pynetdicom import AllStoragePresentationContexts, evt

        self.hold_first = hold_first
        self.received: list[str] = []
        self.stored: dict[str, object] = {}
        self.holding = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        ae = AE(ae_title="DEST")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        self.port = int(self.server.server_address[1])

    def _store(self, event) -> int:
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        with self.lock:
            self.received.append(uid)
            self.stored[uid] = ds
            first = len(self.received) == 1
        if self.hold_first and first:
            self.holding.set()
            self.release.wait(120)
        return 0x0000

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


ALL_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian, what the node's results are written in
    "1.2.840.10008.1.2",
]


@pytest.fixture
def recording_scp() -> Iterator[Callable[..., RecordingSCP]]:
    servers: list[RecordingSCP] = []

    def start(**kwargs: bool) -> RecordingSCP:
        servers.append(RecordingSCP(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_sigkill_during_the_send_then_restart_gives_one_sr_with_the_same_uid(
    tiny_bundle: Path, tmp_path: Path, recording_scp: Callable[..., RecordingSCP]
) -> None:
    from dicom_factory import make_cr
    from pydicom.uid import generate_uid
    from test_node_orthanc import ServeProcess, ramp_image, storescu

    dest = recording_scp(hold_first=True)
    work = tmp_path / "work"
    study = generate_uid()
    files = [tmp_path / f"im{i}.dcm" for i in range(2)]
    for i, path in enumerate(files):
        make_cr(path, StudyInstanceUID=study, InstanceNumber=i + 1, pixels=ramp_image(40 + i))
    first = ServeProcess(work, f"DEST@127.0.0.1:{dest.port}", tiny_bundle)
    try:
        storescu(first.port, files)
        assert dest.holding.wait(180), f"the SR never reached the destination:\n{first.log()[-3000:]}"
    finally:
        first.kill()  # SIGKILL while the destination holds its C-STORE reply
    assert first.process.returncode == -signal.SIGKILL
    assert not (work / "done" / study).exists()
    dest.release.set()
    second = ServeProcess(work, f"DEST@127.0.0.1:{dest.port}", tiny_bundle)
    try:
        status = second.wait_finished({study}, timeout=180)[study]
    finally:
        assert second.terminate() == 0, second.log()[-3000:]
    assert status["status"] == "done", status
    assert len(dest.received) == 2  # sent twice (the first reply was never read) ...
    assert len(set(dest.received)) == 1 and len(dest.stored) == 1  # ... as the same object
    (sr,) = dest.stored.values()
    assert sr.StudyInstanceUID == study


def test_serve_logs_no_patient_value_and_sends_the_sr_of_a_film_with_an_invalid_birth_date(
    tiny_bundle: Path, tmp_path: Path, recording_scp: Callable[..., RecordingSCP]
) -> None:
    from dicom_factory import make_cr
    from pydicom.uid import generate_uid
    from test_node_orthanc import ServeProcess, ramp_image, storescu

    dest = recording_scp()
    birth, unknown_vr = generate_uid(), generate_uid()
    make_cr(
        tmp_path / "birth.dcm",
        StudyInstanceUID=birth,
        pixels=ramp_image(50),
        PatientName="Quokka^Brontosaurus",
        PatientID="PHIID5550199",
        PatientBirthDate="1901-02-03",
    )
    make_cr(tmp_path / "zz.dcm", StudyInstanceUID=unknown_vr, pixels=ramp_image(51), PatientName="Zorrino^X")
    data = (tmp_path / "zz.dcm").read_bytes()
    at = data.index(b"\x10\x00\x10\x00PN")
    (tmp_path / "zz.dcm").write_bytes(data[: at + 4] + b"ZZ" + data[at + 6 :])
    serve = ServeProcess(tmp_path / "work", f"DEST@127.0.0.1:{dest.port}", tiny_bundle)
    try:
        storescu(serve.port, [tmp_path / "birth.dcm"])
        # dcmtk cannot parse the unknown VR; pynetdicom sends the file's bytes as they are.
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(ComputedRadiographyImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", serve.port, ae_title=NODE_AET)
        assert assoc.is_established
        try:
            assert assoc.send_c_store(tmp_path / "zz.dcm").Status == 0x0000
        finally:
            assoc.release()
        statuses = serve.wait_finished({birth, unknown_vr}, timeout=180)
    finally:
        assert serve.terminate() == 0
    log = serve.log()
    assert {study: s["status"] for study, s in statuses.items()} == {birth: "done", unknown_vr: "done"}, log
    assert all(s["results"] for s in statuses.values())  # sent, not "nothing to report"
    assert sorted(str(ds.StudyInstanceUID) for ds in dest.stored.values()) == sorted([birth, unknown_vr])
    assert "(0010,0010) PatientName is unreadable or invalid; left out" in log  # the ZZ film was read
    assert " DEBUG " in log
    leaked = [v for v in ("Quokka", "Brontosaurus", "PHIID5550199", "1901-02-03", "Zorrino") if v in log]
    assert leaked == []


def test_an_sr_failure_fails_that_study_alone_in_a_batch(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InferenceProcessor on two studies at once: one whose SR cannot be built is failed, the other gets
    its SR; and the node moves the first to failed/, not done/."""
    from dicom_factory import make_cr
    from pydicom.uid import generate_uid
    from test_node_orthanc import ramp_image

    from pneumonia_monai.dicom import sr as sr_module
    from pneumonia_monai.node.processor import InferenceProcessor, StudyProcessingError

    good, bad = generate_uid(), generate_uid()
    for study, seed in ((good, 60), (bad, 61)):
        make_cr(tmp_path / "inbox" / study / "a.dcm", StudyInstanceUID=study, pixels=ramp_image(seed))
    real = sr_module.build_pneumonia_sr

    def unknown_vr(sources, findings, **kwargs):
        if str(sources[0].StudyInstanceUID) == bad:
            raise NotImplementedError("Unknown Value Representation 'ZZ' in tag (0010,0010)")
        return real(sources, findings, **kwargs)

    monkeypatch.setattr(sr_module, "build_pneumonia_sr", unknown_vr)
    processor = InferenceProcessor(bundle=tiny_bundle, device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    outcomes = processor.process_many([tmp_path / "inbox" / good, tmp_path / "inbox" / bad], out)
    assert isinstance(outcomes[tmp_path / "inbox" / bad], StudyProcessingError)
    assert "report could not be built" in str(outcomes[tmp_path / "inbox" / bad])
    (sr_path,) = outcomes[tmp_path / "inbox" / good]
    assert sr_path.name == f"{good}.dcm" and sr_path.is_file()


# --------------------------------------------------------------------------------------------------
# the inbox: a corrupt outbox entry, a study that never goes quiet


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"status": "maybe"}', b"\xff\xfe\x00"])
def test_a_corrupt_outbox_status_is_quarantined_and_the_node_carries_on(
    tmp_path: Path, caplog, content: bytes
) -> None:
    work = tmp_path / "work"
    first = Inbox(work, stable_seconds=0, queue_size=4)
    first.open()
    first.store("1.2.3", "1.2.3.1", b"data")
    first.poll()
    assert first.next_studies(1, timeout=0) == ["1.2.3"]
    (work / "outbox" / "1.2.3" / "results" / "sr.dcm").write_bytes(b"sr")
    (work / "outbox" / "1.2.3" / "status.json").write_bytes(content)
    second = Inbox(work, stable_seconds=0, queue_size=4)
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.node.inbox"):
        assert second.open() == ["1.2.3"]  # no traceback: the study is pending again
    assert "outbox entry 1.2.3: status.json is unreadable" in caplog.text
    assert "quarantined in" in caplog.text
    assert (work / "quarantine" / "1.2.3" / "status.json").read_bytes() == content
    assert not (work / "outbox" / "1.2.3").exists()
    assert (work / "inbox" / "1.2.3" / "1.2.3.1.dcm").is_file()


def test_a_study_fed_continuously_is_processed_after_the_maximum_wait(tmp_path: Path, caplog) -> None:
    clock = FakeClock()
    inbox = Inbox(tmp_path, stable_seconds=10, queue_size=4, max_wait=60, clock=clock)
    inbox.open()
    with caplog.at_level(logging.WARNING, logger="pneumonia_monai.node.inbox"):
        for i in range(59):  # an instance every second: never 10 s quiet
            inbox.store("1.2.3", f"1.2.3.{i}", b"data")
            assert inbox.poll() == []
            clock.now += 1
        inbox.store("1.2.3", "1.2.3.59", b"data")
        clock.now += 1
        assert inbox.poll() == ["1.2.3"]  # 60 s after its first instance
    assert "still receiving 60 s after its first instance: queued (max wait)" in caplog.text
    assert inbox.next_studies(1, timeout=0) == ["1.2.3"]
    assert inbox.store("1.2.3", "1.2.3.60", b"data").value == "late"
    with pytest.raises(ValueError, match="max_wait must be a positive number of seconds or None, got 0"):
        Inbox(tmp_path, stable_seconds=1, queue_size=1, max_wait=0)


def test_serve_takes_the_hardening_options(tmp_path: Path) -> None:
    from pneumonia_monai.cli import serve

    argv = ["--work-dir", "W", "--dest-ae", "A@h:1", "--max-study-wait", "120", "--request-timeout", "2"]
    argv += ["--max-pending-connections", "9", "--acse-timeout", "3", "--dimse-timeout", "4"]
    argv += ["--network-timeout", "5"]
    args = serve.build_parser().parse_args(argv)
    config = serve.config_from_args(args)
    assert (config.max_study_wait, config.request_timeout, config.max_pending_connections) == (120, 2, 9)
    assert (config.acse_timeout, config.dimse_timeout, config.network_timeout) == (3, 4, 5)
    default = serve.config_from_args(
        serve.build_parser().parse_args(["--work-dir", "W", "--dest-ae", "A@h:1"])
    )
    assert (default.max_study_wait, default.request_timeout, default.max_pending_connections) == (600, 5, 32)


def test_serve_puts_max_pixels_in_force_before_the_node_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --max-pixels N`` is the budget of its C-STORE handler's inflate check and its decoders."""
    from pneumonia_monai.cli import serve
    from pneumonia_monai.dicom import limits

    seen: list[tuple[int, int]] = []

    class RecordsTheBudget:
        def __init__(self, config: NodeConfig, **kwargs: object) -> None:
            pass

        def start(self) -> None:
            seen.append((limits.max_pixels(), limits.max_inflated_bytes()))
            raise OSError("stopped by the test once the budget was seen")

    monkeypatch.setattr(serve, "DicomNode", RecordsTheBudget)
    monkeypatch.setattr(serve, "_load_processor", lambda config: object())  # the model is not the point
    monkeypatch.chdir(tmp_path)
    previous = limits.max_pixels()
    argv = ["--work-dir", "W", "--dest-ae", "A@127.0.0.1:9", "--port", "0"]
    try:
        assert serve.main([*argv, "--max-pixels", "4000000"]) != 0
    finally:
        limits.set_max_pixels(previous)
    assert seen == [(4_000_000, 4_000_000 * limits.BUDGET_BYTES_PER_PIXEL + limits.HEADER_ALLOWANCE)]
    assert serve.build_parser().parse_args(argv).max_pixels == limits.MAX_PIXELS


# --------------------------------------------------------------------------------------------------
# trust gaps (item 11)


@pytest.mark.parametrize("case", ["no checkpoint", "bad config", "checkpoint that does not fit"])
def test_serve_refuses_an_unusable_bundle_with_exit_2(
    bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, case: str
) -> None:
    from pneumonia_monai.cli import serve

    if case == "bad config":
        (bundle_copy / "models" / "model.pt").write_bytes(b"")
        (bundle_copy / "configs" / "inference.json").write_text("{ not json", encoding="utf-8")
    elif case == "checkpoint that does not fit":
        import torch

        torch.save({"weight": torch.zeros(3)}, bundle_copy / "models" / "model.pt")
    monkeypatch.chdir(tmp_path)
    started: list[object] = []

    class NeverStarted:  # bounds the test: had the bundle passed, serve would run until a signal
        def __init__(self, config: NodeConfig) -> None:
            started.append(config)

        def start(self) -> None:
            raise OSError("the node was started with an unusable bundle")

    monkeypatch.setattr(serve, "DicomNode", NeverStarted)
    argv = ["--work-dir", "W", "--dest-ae", "A@127.0.0.1:9", "--port", "0", "--bundle", str(bundle_copy)]
    with caplog.at_level(logging.ERROR, logger="pneumonia_monai.cli.serve"):
        assert serve.main(argv) == 2
    assert "cannot start the node: unusable bundle:" in caplog.text
    assert started == []
    assert not (tmp_path / "W").exists()  # refused before the node touched its work folder


def test_the_default_bundle_is_never_chosen_by_a_command_line_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input *named* ``--config_file=...`` beside a ``configs/`` folder must not select that bundle."""
    from pneumonia_monai.engine import paths

    evil = tmp_path / "evil"
    (evil / "configs").mkdir(parents=True)
    (evil / "configs" / "metadata.json").write_text("{}", encoding="utf-8")
    (evil / "configs" / "inference.json").write_text('{"x": "$print(1)"}', encoding="utf-8")
    name = f"--config_file={evil / 'configs' / 'inference.json'}"
    monkeypatch.setattr("sys.argv", ["pneumonia-monai", "infer", "--", name])
    monkeypatch.delenv(paths.BUNDLE_ENV, raising=False)
    found = Path(paths.locate_bundle_root())
    assert found != evil.resolve()
    assert found == (Path(paths.__file__).resolve().parents[2] / "bundle").resolve()
