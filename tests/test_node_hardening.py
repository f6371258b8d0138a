"""The node under hostile senders (issue 10): held connections, random PDUs, malformed AE titles,
a corrupt outbox entry, a study fed for ever, an unusable bundle, and result UIDs across a crash.

Every server listens on 127.0.0.1 and takes its port from the server itself.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage
from test_node_scp import NODE_AET, RecordingDestination, SrProcessor, dcmtk

from pneumonia_monai.node.config import NodeConfig, StowDestination
from pneumonia_monai.node.gate import PreAssociationGate
from pneumonia_monai.node.service import DicomNode

#: The issue's bound on a legitimate C-ECHO under the connection attack.
ECHO_BOUND_S = 3.0


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., DicomNode]]:
    nodes: list[DicomNode] = []

    def start(processor=None, destination=None, **overrides) -> DicomNode:
        values = {
            "work_dir": tmp_path / f"work{len(nodes)}",
            "destination": StowDestination("http://127.0.0.1:9/dicom-web"),
            "ae_title": NODE_AET,
            "port": 0,
            "stable_seconds": 0.5,
            "retry_backoff_seconds": 0.01,
        }
        values.update(overrides)
        node = DicomNode(
            NodeConfig(**values),
            processor=processor or SrProcessor(),
            destination=destination or RecordingDestination(),
            poll_interval=0.05,
        )
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(association_grace=2, drain_timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


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
                    while not self.stop.wait(5):
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
        wait_until(lambda: gate.pending >= 16, 20, "the 16 attack connections to be pending")
        deadline = time.monotonic() + gate.request_timeout + 3  # attack sockets time out and come back
        while time.monotonic() < deadline or len(latencies) < 5:
            elapsed, result = echo(node.port)
            assert result.returncode == 0, result.stdout + result.stderr
            latencies.append(elapsed)
        assert gate.counts["timeout"] >= 16  # each attack socket was closed at the deadline ...
        assert attack.connections > 16  # ... and came back
    assert max(latencies) < ECHO_BOUND_S, latencies
    print(f"echo under 12 idle + 4 trickling: n={len(latencies)} max={max(latencies):.3f} s")


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
