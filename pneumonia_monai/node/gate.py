"""Connections that have not asked for an association yet: a short deadline and a cap of their own.

pynetdicom's :class:`~pynetdicom.transport.AssociationServer` starts an
:class:`~pynetdicom.association.Association` thread for every TCP connection as soon as it is accepted,
and its ``maximum_associations`` check (in the ACSE, when an A-ASSOCIATE-RQ is negotiated) counts those
threads. A connection that sends nothing therefore holds an association slot until the ACSE timeout,
one that trickles a byte every few seconds holds it for ever (each ``recv`` of the PDU body succeeds
before the network timeout), and while they do, legitimate associations are rejected with "local limit
exceeded".

:class:`GatedAssociationServer` puts a gate in front: a new connection is not handed to pynetdicom
until its first PDU, a complete A-ASSOCIATE-RQ, is in the socket's receive buffer (read with
``MSG_PEEK``, so pynetdicom reads it as usual). Until then it is *pending*:

- it must deliver the whole A-ASSOCIATE-RQ within ``request_timeout`` seconds of connecting, however
  slowly its bytes come; otherwise it is closed;
- a first PDU that is not an A-ASSOCIATE-RQ, or claims more than ``max_request_bytes``, closes it at
  once (random bytes never reach the association machinery);
- an A-ASSOCIATE-RQ whose called or calling AE title is malformed (all spaces, a backslash, control
  characters) is rejected (A-ASSOCIATE-RJ, "AE title not recognised") with a log line naming it;
- at most ``max_pending`` connections are pending at once: a new one beyond that closes the *oldest*
  pending one. A real requestor sends its A-ASSOCIATE-RQ within milliseconds of connecting, so it is
  never the oldest for long, while idle or trickling sockets age out first.

Only connections past the gate become associations and count against ``maximum_associations``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from typing import Any

from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from pneumonia_monai import checks

logger = logging.getLogger(__name__)

#: PDU type of an A-ASSOCIATE-RQ (PS3.8 9.3.2).
A_ASSOCIATE_RQ = 0x01
#: Bytes of a PDU header: type, reserved, 4-byte big-endian length.
_PDU_HEADER = 6
#: Seconds between two looks at a socket whose request has begun to arrive but is not complete.
_PEEK_INTERVAL = 0.02


class PreAssociationGate:
    """Admission of connections that have not yet delivered their A-ASSOCIATE-RQ.

    Args:
        request_timeout: seconds a connection has, from being accepted, to deliver a whole A-ASSOCIATE-RQ.
        max_pending: connections that may be pending at once; one more closes the oldest.
        max_request_bytes: the largest A-ASSOCIATE-RQ PDU accepted (its header's length field).

    Raises:
        ValueError: if a limit is not positive.
    """

    def __init__(
        self, *, request_timeout: float, max_pending: int, max_request_bytes: int = 256 * 1024
    ) -> None:
        checks.positive_number("request_timeout", request_timeout, what="a positive number of seconds")
        checks.positive_int("max_pending", max_pending)
        checks.positive_int("max_request_bytes", max_request_bytes)
        self.request_timeout = float(request_timeout)
        self.max_pending = max_pending
        self.max_request_bytes = max_request_bytes
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, socket.socket] = OrderedDict()
        self._evicted: set[int] = set()
        #: Connections closed at the gate, by reason (``timeout``, ``not-a-request``, ``too-large``,
        #: ``bad-ae``, ``closed``, ``evicted``), and those let through (``admitted``).
        self.counts: dict[str, int] = dict.fromkeys(
            ("admitted", "timeout", "not-a-request", "too-large", "bad-ae", "closed", "evicted"), 0
        )

    @property
    def pending(self) -> int:
        """How many connections are pending now."""
        with self._lock:
            return len(self._pending)

    def _enter(self, sock: socket.socket) -> None:
        with self._lock:
            while len(self._pending) >= self.max_pending:
                key, oldest = self._pending.popitem(last=False)
                self._evicted.add(key)
                with contextlib.suppress(OSError):  # wakes its thread: its peek sees the end
                    oldest.shutdown(socket.SHUT_RDWR)
            self._pending[id(sock)] = sock

    def _leave(self, sock: socket.socket) -> bool:
        """Remove ``sock`` from the pending set; return whether it had been evicted."""
        with self._lock:
            self._pending.pop(id(sock), None)
            evicted = id(sock) in self._evicted
            self._evicted.discard(id(sock))
            return evicted

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def wait_for_request(self, sock: socket.socket) -> str | None:
        """Wait until ``sock``'s receive buffer holds a whole A-ASSOCIATE-RQ; nothing is consumed.

        Returns:
            ``None`` when the request is there (the connection may become an association); otherwise
            why the connection must be closed.
        """
        self._enter(sock)
        try:
            reason = self._peek_request(sock)
        finally:
            evicted = self._leave(sock)
        if evicted and reason is not None:
            reason = f"evicted: more than {self.max_pending} connections without an association request"
        self._count("admitted" if reason is None else _key(reason))
        return reason

    def _peek_request(self, sock: socket.socket) -> str | None:
        deadline = time.monotonic() + self.request_timeout
        need = _PDU_HEADER
        seen = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return (
                    f"timeout: no complete A-ASSOCIATE-RQ within {self.request_timeout:g} s "
                    f"({seen} of {need} bytes)"
                )
            try:
                if seen == 0:
                    readable, _, _ = select.select([sock], [], [], remaining)
                    if not readable:
                        continue
                else:
                    time.sleep(min(_PEEK_INTERVAL, remaining))
                data = sock.recv(need, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:
                return f"closed: {type(exc).__name__}"
            if not data or len(data) < seen:
                return "closed: the peer closed the connection before its association request"
            seen = len(data)
            if need == _PDU_HEADER and seen >= _PDU_HEADER:
                pdu_type, _, length = struct.unpack(">BBL", data[:_PDU_HEADER])
                if pdu_type != A_ASSOCIATE_RQ:
                    return f"not-a-request: first PDU of type 0x{pdu_type:02X}, not an A-ASSOCIATE-RQ"
                if length > self.max_request_bytes:
                    return f"too-large: A-ASSOCIATE-RQ of {length} bytes (at most {self.max_request_bytes})"
                need = _PDU_HEADER + length
            if seen >= need:
                return _check_ae_titles(data)


def _check_ae_titles(pdu: bytes) -> str | None:
    """Why the called or calling AE title of an A-ASSOCIATE-RQ is malformed, or None if both are valid."""
    for name, field in (("called", pdu[10:26]), ("calling", pdu[26:42])):
        text = field.decode("latin-1")
        if len(field) != 16 or not text.strip(" ") or not _AE_TITLE.match(text):
            return f"bad-ae: the {name} AE title {bytes(field)!r} is not a valid AE title"
    return None


#: A-ASSOCIATE-RJ PDUs (PS3.8 9.3.4): rejected-permanent by the service user, calling / called AE title
#: not recognised.
_REJECT = {
    "calling": bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 1, 3]),
    "called": bytes([0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7]),
}
#: One AE title (AE VR): 16 bytes of the default repertoire without backslash or control characters.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{16}$")


def _key(reason: str) -> str:
    return reason.split(":", 1)[0]


class GatedRequestHandler(RequestHandler):
    """pynetdicom's request handler, behind the server's :class:`PreAssociationGate`."""

    server: GatedAssociationServer

    def handle(self) -> None:
        """Hand the connection to pynetdicom once its A-ASSOCIATE-RQ is complete, else close it."""
        sock = self.request
        if self.server.ssl_context is None:  # MSG_PEEK cannot see through TLS
            reason = self.server.gate.wait_for_request(sock)
            if reason is not None:
                host, port = self.client_address[:2]
                if reason.startswith("bad-ae"):
                    # pynetdicom would abort it without a word: reject it, saying which title is wrong.
                    detail = reason.split(": ", 1)[1]
                    logger.warning("association request from %s:%s rejected: %s", host, port, detail)
                    with contextlib.suppress(OSError):
                        sock.sendall(_REJECT["calling" if "calling" in reason else "called"])
                else:
                    logger.info("connection from %s:%s closed before association: %s", host, port, reason)
                self.server.shutdown_request(sock)
                return
        super().handle()


class GatedAssociationServer(ThreadedAssociationServer):
    """A threaded association server whose connections pass a :class:`PreAssociationGate` first.

    Args:
        *args: as :class:`~pynetdicom.transport.ThreadedAssociationServer`.
        gate: the gate.
        **kwargs: as :class:`~pynetdicom.transport.ThreadedAssociationServer`.
    """

    daemon_threads = True
    #: The listen backlog (socketserver's default is 5): a burst of connections, such as attack sockets
    #: re-opened together after their deadline, must not fill it and delay a real requestor's SYN.
    request_queue_size = 128

    def __init__(self, *args: Any, gate: PreAssociationGate, **kwargs: Any) -> None:
        if not isinstance(gate, PreAssociationGate):
            raise TypeError(f"gate must be a PreAssociationGate, got {type(gate).__name__}")
        self.gate = gate
        kwargs.setdefault("request_handler", GatedRequestHandler)
        super().__init__(*args, **kwargs)
