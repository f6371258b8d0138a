"""A private Orthanc for tests and benchmarks: own configuration and storage, on 127.0.0.1 only.

Independent of pytest::

    with OrthancServer(tmp_dir, modalities={"node": ("PNEUMONIA", "127.0.0.1", 104)}) as orthanc:
        orthanc.upload(Path("ct.dcm"))
        orthanc.get_json("/studies")
        orthanc.dicomweb_url        # http://127.0.0.1:<port>/dicom-web
        orthanc.dicom_port          # C-STORE to ORTHANC@127.0.0.1:<port>

The DICOMweb plugin of Debian's ``orthanc-dicomweb`` is loaded from :data:`PLUGIN_DIRS`.

Where it listens. Orthanc 1.10 has no bind-address option (its configuration has ``HttpPort`` and
``DicomPort`` only: ``Orthanc --config=-`` lists no address, and a search of the Orthanc documentation
for one, ``HttpBindAddress``, ``DicomServerBindAddress`` or the like, found none), and no way to report
a port the kernel picked for it. So it runs in a network namespace of its own
(:class:`~pneumonia_monai.devtools.netns.NetworkNamespace`), whose only interface is a loopback:
"every interface" is that loopback, unreachable from the host or any network, and since no other
process lives there its fixed ports (:data:`HTTP_PORT`, :data:`DICOM_PORT`) are always free, with no
pick-then-bind race. The tests reach it through two
:class:`~pneumonia_monai.devtools.netns.LoopbackForwarder` sockets of this process, bound to ``127.0.0.1``
port 0: the kernel picks their ports, reported as :attr:`OrthancServer.http_port` and
:attr:`OrthancServer.dicom_port`, and they are held, never released, while Orthanc runs. Orthanc sees
every connection coming from 127.0.0.1 (inside its namespace). On top of that, HTTP refuses remote
clients (``RemoteAccessAllowed`` false) and DICOM accepts only the configured modalities, from their
host (``DicomAlwaysAllowEcho/Store`` false, ``DicomCheckModalityHost`` true). Creating the namespace
needs root (``CAP_SYS_ADMIN``); without it :meth:`OrthancServer.start` raises
:class:`~pneumonia_monai.devtools.netns.NamespaceUnavailableError`, which the fixtures turn into a skip.

:func:`refused_port` gives a port where nobody listens, for "destination down" tests.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pneumonia_monai.devtools.netns import LoopbackForwarder, NetworkNamespace

#: Where Debian's orthanc-dicomweb puts its plugin.
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
PLUGIN_NAME = "libOrthancDicomWeb.so"
#: What to install when something is missing.
APT_HINT = "install the Debian packages: apt-get install orthanc orthanc-dicomweb dcmtk"

LOOPBACK = "127.0.0.1"
#: Orthanc's own ports, inside its private network namespace (Orthanc's defaults).
HTTP_PORT = 8042
DICOM_PORT = 4242


class OrthancError(RuntimeError):
    """Orthanc could not be found, started, or answered with an error."""


@contextmanager
def refused_port() -> Iterator[int]:
    """Yield a loopback port that refuses connections for the whole block.

    The port is bound by this process (the kernel picks it) and never listened on, so nobody else can
    take it before the block ends: a connection to it is refused, every time.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield int(sock.getsockname()[1])


def find_orthanc() -> str:
    """Return the Orthanc executable (``Orthanc`` on the PATH, or Debian's /usr/sbin/Orthanc)."""
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise OrthancError(f"Orthanc executable not found; {APT_HINT}")
    return found


def find_dicomweb_plugin() -> Path:
    """Return the DICOMweb plugin shared library."""
    for folder in PLUGIN_DIRS:
        candidate = folder / PLUGIN_NAME
        if candidate.exists():
            return candidate
    raise OrthancError(f"{PLUGIN_NAME} not found in {[str(d) for d in PLUGIN_DIRS]}; {APT_HINT}")


class OrthancServer:
    """One Orthanc process with its own configuration, storage and network namespace.

    :attr:`http_port` and :attr:`dicom_port` are the ports, on 127.0.0.1, that reach it (see the module
    docstring); :attr:`namespace` is where it runs.

    Args:
        work_dir: a folder of its own (configuration, storage, log).
        aet: Orthanc's AE title.
        modalities: DICOM peers, ``{name: (AET, host, port)}``; only they may store to Orthanc.
        start_timeout: seconds to wait for the REST API.
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.start_timeout = start_timeout
        #: Where the tests reach Orthanc: 127.0.0.1 ports of this process, set by :meth:`start`.
        self.http_port = 0
        self.dicom_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.namespace: NetworkNamespace | None = None
        self._forwarders: list[LoopbackForwarder] = []
        self.log_path = self.work_dir / "orthanc.log"

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Base URL of the DICOMweb plugin."""
        return f"{self.url}/dicom-web"

    def _write_config(self) -> Path:
        storage = self.work_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "pneumonia-monai-tests",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": HTTP_PORT,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "HttpThreadsCount": 8,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": DICOM_PORT,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomThreadsCount": 8,
            "DicomModalities": {name: list(peer) for name, peer in self.modalities.items()},
            "Plugins": [str(find_dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }
        path = self.work_dir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def start(self) -> OrthancServer:
        """Start Orthanc in a new network namespace, forward two loopback ports to it, wait for its API.

        Raises:
            NamespaceUnavailableError: if no network namespace can be created (not root).
            OrthancError: if it is not installed, exits, or does not answer within ``start_timeout``.
        """
        if self.process is not None:
            raise OrthancError("this Orthanc is already started")
        executable = find_orthanc()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.namespace = NetworkNamespace()
        try:

            def launch() -> subprocess.Popen[bytes]:  # runs inside the namespace: so does Orthanc
                with self.log_path.open("ab") as log:
                    return subprocess.Popen(
                        [executable, "--no-jobs", str(config)], stdout=log, stderr=subprocess.STDOUT
                    )

            self.process = self.namespace.call(launch)
            self._forwarders = [
                LoopbackForwarder(self.namespace, HTTP_PORT),
                LoopbackForwarder(self.namespace, DICOM_PORT),
            ]
            self.http_port, self.dicom_port = (forwarder.port for forwarder in self._forwarders)
            self._wait_ready()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, OrthancError):
                raise OrthancError(f"Orthanc did not start: {exc}; log: {self.log_tail()}") from exc
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with status {self.process.returncode}")
            try:
                self.get_json("/system", timeout=2)
                return
            except (OSError, OrthancError):
                time.sleep(0.2)
        raise OrthancError(f"Orthanc's REST API did not answer within {self.start_timeout} s")

    def log_tail(self, size: int = 3000) -> str:
        """Return the end of Orthanc's log, for failure messages."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after ``timeout`` seconds), its forwarders and namespace."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        forwarders, self._forwarders = self._forwarders, []
        for forwarder in forwarders:
            forwarder.close()
        namespace, self.namespace = self.namespace, None
        if namespace is not None:
            namespace.close()

    def __enter__(self) -> OrthancServer:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------
    # REST

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        *,
        content_type: str = "",
        timeout: float = 30,
    ) -> bytes:
        """Send one REST request; return the body.

        Raises:
            OrthancError: on an HTTP error status.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", errors="replace")[:500]
            raise OrthancError(f"{method} {path}: HTTP {exc.code}: {body}") from exc

    def get_json(self, path: str, *, timeout: float = 30) -> Any:
        """GET a JSON resource."""
        return json.loads(self.request("GET", path, timeout=timeout))

    def post_json(self, path: str, payload: Any, *, timeout: float = 60) -> Any:
        """POST a JSON body; return the JSON answer."""
        body = self.request(
            "POST", path, json.dumps(payload).encode(), content_type="application/json", timeout=timeout
        )
        return json.loads(body) if body else None

    def upload(self, path: str | Path) -> str:
        """Store one DICOM file through ``POST /instances``; return Orthanc's instance id."""
        answer = json.loads(
            self.request("POST", "/instances", Path(path).read_bytes(), content_type="application/dicom")
        )
        return str(answer["ID"])

    def instance_file(self, orthanc_id: str) -> bytes:
        """Return the stored DICOM file of an instance."""
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def find(self, level: str, query: dict[str, str], *, expand: bool = True) -> list[Any]:
        """``POST /tools/find`` at ``level`` (Patient, Study, Series, Instance)."""
        return list(self.post_json("/tools/find", {"Level": level, "Query": query, "Expand": expand}))

    def sr_instances(self) -> list[dict[str, Any]]:
        """Every stored SR instance: ``{"ID", "StudyInstanceUID", "SOPInstanceUID"}``."""
        found = []
        for series in self.find("Series", {"Modality": "SR"}):
            study = self.get_json(f"/studies/{series['ParentStudy']}")
            for instance_id in series["Instances"]:
                tags = self.get_json(f"/instances/{instance_id}")["MainDicomTags"]
                found.append(
                    {
                        "ID": instance_id,
                        "StudyInstanceUID": study["MainDicomTags"]["StudyInstanceUID"],
                        "SOPInstanceUID": tags["SOPInstanceUID"],
                    }
                )
        return found


def wait_for(predicate: Any, timeout: float, interval: float = 0.25) -> bool:
    """Call ``predicate()`` until it is truthy or ``timeout`` seconds passed; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return bool(result)
        time.sleep(interval)
