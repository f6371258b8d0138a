"""A private network namespace for a test server, and loopback forwarders into it (Linux, root).

Some servers cannot be told which address to listen on (Orthanc 1.10 binds every interface) or which
port they got (no port 0 and port file). Started inside a :class:`NetworkNamespace` of their own, they
share no interface with the host: the namespace has only a loopback, so "every interface" is that
loopback, and no other process lives there, so a fixed port is always free. The tests reach such a
server through a :class:`LoopbackForwarder`: a socket of this process bound to ``127.0.0.1`` port 0
(the kernel picks the port, and it is never released while the test runs), forwarding each connection
to the fixed port inside the namespace.

Only the calling *thread* ever enters a namespace (``setns`` moves one thread); the pytest thread is
never moved: :meth:`NetworkNamespace.call` runs a function in a short-lived thread that entered it, and
a process started there (a server) is born inside it.

:func:`listening_sockets` and :func:`interfaces` read from ``/proc`` what a process's namespace holds,
for the tests that check where servers listen.

Creating a network namespace needs ``CAP_SYS_ADMIN`` (root). Where it is refused,
:class:`NamespaceUnavailableError` says why; the fixtures turn that into a skip.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import socket
import struct
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
#: ``<sched.h>``: the network namespace flag of unshare(2) and setns(2).
CLONE_NEWNET = 0x40000000
#: ``<linux/sockios.h>``, ``<net/if.h>``: get and set an interface's flags; "up".
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
#: ``struct ifreq``: a 16-byte interface name, then a 24-byte union whose first member (here) is the flags.
_IFREQ = struct.Struct("16sh22x")


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, for setns(2) and unshare(2); opened on first use, not at import."""
    return ctypes.CDLL(None, use_errno=True)


class NamespaceUnavailableError(OSError):
    """This process may not create or enter a network namespace (not root, or a restricted container)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _enter(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` refers to."""
    _check(_libc().setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


def _loopback_up() -> None:
    """Bring ``lo`` up in the calling thread's network namespace (what ``ip link set lo up`` does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        (_, flags) = _IFREQ.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, request))
        fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))


def _in_thread(target: Callable[[], T], name: str) -> T:
    """Run ``target()`` in a new thread, wait for it; return its result or raise its exception."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


class NetworkNamespace:
    """A new network namespace with its loopback up, and nothing else; kept alive by an open descriptor.

    Raises:
        NamespaceUnavailableError: if the kernel refuses (needs ``CAP_SYS_ADMIN``).
    """

    def __init__(self) -> None:
        def create() -> int:
            # unshare(2) moves this (throw-away) thread only; /proc/thread-self names its new namespace.
            _check(_libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            _loopback_up()
            return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

        try:
            self.fd: int | None = _in_thread(create, "netns-create")
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS, errno.ENOSPC):
                raise NamespaceUnavailableError(
                    exc.errno,
                    f"cannot create a private network namespace ({exc.strerror}); the test servers that "
                    "cannot bind the loopback only run in one: run the tests as root (CAP_SYS_ADMIN)",
                ) from exc
            raise

    def _fd(self) -> int:
        if self.fd is None:
            raise RuntimeError("the network namespace is closed")
        return self.fd

    def call(self, target: Callable[[], T]) -> T:
        """Run ``target()`` in a thread inside the namespace; return its result.

        Sockets it creates belong to the namespace, and so do processes it starts (``subprocess``
        forks the calling thread, namespaces included).
        """
        fd = self._fd()

        def inside() -> T:
            _enter(fd)
            return target()

        return _in_thread(inside, "netns-call")

    def enter_current_thread(self) -> None:
        """Move the calling thread into the namespace for good (a thread of its own: see the module)."""
        _enter(self._fd())

    def close(self) -> None:
        """Let the namespace go (it ends once no process or descriptor holds it)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class LoopbackForwarder:
    """Listen on ``127.0.0.1`` (port chosen by the kernel) here; forward each connection into a namespace.

    Args:
        namespace: where the server is.
        target_port: the server's port on the namespace's loopback.
        connect_timeout: seconds to connect to the server for each forwarded connection.
    """

    def __init__(self, namespace: NetworkNamespace, target_port: int, *, connect_timeout: float = 10) -> None:
        self.namespace = namespace
        self.target_port = int(target_port)
        self.connect_timeout = connect_timeout
        # Created by the calling thread, so in its (the host's) namespace, on the loopback only.
        self._listener = socket.create_server((LOOPBACK, 0))
        #: The port clients connect to; the listening socket holds it until :meth:`close`.
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"forward-{self.port}-to-{self.target_port}", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        # This thread lives in the namespace: the upstream sockets it creates are the namespace's.
        self.namespace.enter_current_thread()
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), self.connect_timeout)
            except OSError:
                client.close()  # the client sees the connection closed, as it would a refused one
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()

    def close(self) -> None:
        """Stop listening and cut the connections still open."""
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        for sock in (self._listener, *sockets):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept() or recv()
        self._listener.close()
        self._thread.join(10)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until end of stream, then pass the end on (half close)."""
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
    except OSError:
        pass
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def listening_sockets(pid: int | str) -> set[tuple[str, int]]:
    """The IPv4 TCP sockets listening in the network namespace of process ``pid`` (or ``"self"``).

    Returns:
        ``{(address, port)}``, read from ``/proc/<pid>/net/tcp``.
    """
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # TCP_LISTEN
            address, port = fields[1].split(":")
            found.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)))
    return found


def interfaces(pid: int | str) -> set[str]:
    """The network interfaces of the namespace of process ``pid``, read from ``/proc/<pid>/net/dev``."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}
