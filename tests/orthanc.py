"""A private Orthanc for the tests: own configuration, own storage, ports on the loopback, stopped after use.

Independent of pytest::

    with OrthancServer(tmp_dir, modalities={"node": ("PNEUMONIA", "127.0.0.1", 11112)}) as orthanc:
        orthanc.upload(Path("ct.dcm"))
        orthanc.get_json("/studies")
        orthanc.dicomweb_url        # http://127.0.0.1:<port>/dicom-web

The DICOMweb plugin of Debian's ``orthanc-dicomweb`` is loaded from :data:`PLUGIN_DIRS`. Orthanc
1.10 has no bind-address option: it listens on every interface, but HTTP refuses remote clients
(``RemoteAccessAllowed`` false) and DICOM accepts only the configured modalities, from their host
(``DicomAlwaysAllowEcho/Store`` false, ``DicomCheckModalityHost`` true). Everything here talks to it
on 127.0.0.1.
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
from pathlib import Path
from typing import Any

#: Where Debian's orthanc-dicomweb puts its plugin.
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
PLUGIN_NAME = "libOrthancDicomWeb.so"
#: What to install when something is missing.
APT_HINT = "install the Debian packages: apt-get install orthanc orthanc-dicomweb dcmtk"

LOOPBACK = "127.0.0.1"


class OrthancError(RuntimeError):
    """Orthanc could not be found, started, or answered with an error."""


def free_port() -> int:
    """Return a TCP port that was free on the loopback a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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
    """One Orthanc process with its own configuration and storage under ``work_dir``.

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
        self.http_port = 0
        self.dicom_port = 0
        self.process: subprocess.Popen[bytes] | None = None
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
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "HttpThreadsCount": 8,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
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
        """Start Orthanc and wait until its REST API answers.

        Raises:
            OrthancError: if it is not installed, exits, or does not answer within ``start_timeout``.
        """
        if self.process is not None:
            raise OrthancError("this Orthanc is already started")
        executable = find_orthanc()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(3):  # a port picked free may be taken by someone else before Orthanc binds it
            self.http_port, self.dicom_port = free_port(), free_port()
            config = self._write_config()
            log = self.log_path.open("ab")
            try:
                self.process = subprocess.Popen(
                    [executable, "--no-jobs", str(config)], stdout=log, stderr=subprocess.STDOUT
                )
            finally:
                log.close()
            try:
                self._wait_ready()
                return self
            except OrthancError as exc:
                last_error = str(exc)
                self.stop()
        raise OrthancError(f"Orthanc did not start: {last_error}; log: {self.log_tail()}")

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
        """Stop Orthanc (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> OrthancServer:
        return self.start()

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
