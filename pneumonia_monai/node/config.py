"""Configuration of the DICOM node: who it is, whom it accepts, when a study is ready, where results go.

A configuration is read from command-line flags, from a YAML or JSON file, or both (a flag given on
the command line wins over the file). The file holds a mapping whose keys are the field names of
:class:`NodeConfig`; relative paths in a file are taken relative to the file's folder::

    ae_title: PNEUMONIA
    host: 0.0.0.0
    port: 11112
    work_dir: /var/lib/pneumonia-node
    allowed_calling_aes: [PACS1, PACS2]
    stable_seconds: 10
    max_study_wait: 600                      # process a study still receiving after this long
    queue_size: 16
    max_batch_studies: 8
    dest_ae: PACS1@pacs.example.org:104      # or: dest_stow: https://pacs.example.org/dicom-web
    send_attempts: 5
    retry_backoff_seconds: 2
    keep_days: 7                             # done/ and late/ images (0: deleted once sent)
    keep_failed_days: 30                     # failed/ and quarantine/
    request_timeout: 5                       # seconds to deliver an A-ASSOCIATE-RQ after connecting
    max_pending_connections: 32              # connections without an association request yet
    acse_timeout: 10
    dimse_timeout: 30
    network_timeout: 60
    heatmaps: false
    masks: false                             # also a lung-field DICOM SEG per film, beside the SR
    bundle: /opt/pneumonia/bundle
    device: auto
    site: site_operating_point.json          # a site's threshold (evaluate --choose-threshold)
    fhir_dir: /var/lib/pneumonia-node/fhir   # also a FHIR R5 Bundle per study here
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pneumonia_monai import checks

logger = logging.getLogger(__name__)

#: Characters an AE title may hold: PS3.5 "AE" VR, default character repertoire without backslash.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
#: ``AET@host:port`` (an IPv6 host goes in brackets: ``AET@[::1]:104``).
_DEST_AE = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[^\]]+\]|[^:@\[\]]+):(?P<port>\d+)$")


def check_ae_title(value: object, name: str = "AE title") -> str:
    """Return ``value`` stripped of spaces if it is a valid AE title (1-16 characters, no backslash).

    Raises:
        ValueError: naming ``name`` and the value, if it is not a valid AE title.
    """
    if not isinstance(value, str) or not value.strip() or not _AE_TITLE.match(value):
        raise ValueError(f"{name} must be 1 to 16 printable ASCII characters without '\\', got {value!r}")
    return value.strip()


def check_port(value: object, name: str = "port", *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is a TCP port number (0 allowed only with ``allow_zero``: any free port).

    Raises:
        ValueError: naming ``name`` and the value otherwise.
    """
    low = 0 if allow_zero else 1
    return checks.integer(name, value, minimum=low, maximum=65535)


@dataclass(frozen=True)
class DicomDestination:
    """A DICOM Storage SCP the results are sent to with C-STORE.

    Attributes:
        ae_title: the called AE title.
        host: host name or IP address.
        port: TCP port.
    """

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "destination AE title"))
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"destination host must be a non-empty string, got {self.host!r}")
        check_port(self.port, "destination port")

    @classmethod
    def parse(cls, text: str) -> DicomDestination:
        """Parse ``AET@host:port`` (``AET@[::1]:104`` for an IPv6 address).

        Raises:
            ValueError: if ``text`` does not have that form or a part is invalid.
        """
        match = _DEST_AE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"a DICOM destination must look like AET@host:port, got {text!r}")
        host = match["host"].strip("[]")
        return cls(match["aet"], host, int(match["port"]))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb service the results are sent to with STOW-RS.

    Attributes:
        url: the service's base URL (``.../dicom-web``), ``http`` or ``https``.
    """

    url: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"a STOW-RS destination must be an http(s) URL, got {self.url!r}")

    def __str__(self) -> str:
        # A URL may carry credentials (user:password@host); never log them.
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return f"{parts.scheme}://{netloc}{parts.path}"


Destination = DicomDestination | StowDestination


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node needs to run.

    Attributes:
        work_dir: the node's folder; it holds ``inbox/``, ``outbox/``, ``done/``, ``failed/`` and
            ``late/`` (see :mod:`pneumonia_monai.node.inbox`).
        destination: where results are sent.
        ae_title: the node's own AE title (also the calling AE title of its C-STORE SCU).
        host: address to listen on; ``0.0.0.0`` listens on every interface.
        port: TCP port to listen on; 0 picks a free one (tests).
        allowed_calling_aes: calling AE titles accepted; empty accepts any.
        require_called_ae: reject associations whose called AE title is not ``ae_title``.
        stable_seconds: a study is processed once no instance arrived for that long.
        max_study_wait: ... or once this many seconds passed since its first instance arrived, even if
            instances still come (a study fed continuously); later ones are late arrivals.
        queue_size: how many stable studies may wait for the worker; further ones wait in the inbox.
        max_batch_studies: how many ready studies the worker may give the processor at once (the model
            is loaded once per process); each study still gets its own result.
        max_associations: how many associations may be open at once (connections that have not sent
            their A-ASSOCIATE-RQ yet do not count: see :mod:`pneumonia_monai.node.gate`).
        request_timeout: seconds a new connection has to deliver its whole A-ASSOCIATE-RQ.
        max_pending_connections: connections that may wait for their A-ASSOCIATE-RQ at once; one more
            closes the oldest of them.
        acse_timeout: seconds an association waits for an association or release reply.
        dimse_timeout: seconds an association waits for a DIMSE message.
        network_timeout: seconds an established association may stay silent before it is aborted.
        send_attempts: how many times the results of a study are offered to the destination.
        retry_backoff_seconds: wait before the second attempt, doubled before each further one.
        keep_days: days a processed study's images and results are kept in ``done/`` (and late
            arrivals in ``late/``) before the node deletes them; 0 deletes a study's data as soon as its
            results were sent (see :meth:`pneumonia_monai.node.inbox.Inbox.purge`).
        keep_failed_days: the same for ``failed/`` and ``quarantine/``, kept longer by default so that
            someone can look at why a study failed.
        heatmaps: also send Grad-CAM heatmaps as Secondary Capture images.
        masks: also send the lung fields of each scored film as a DICOM Segmentation.
        bundle: the MONAI bundle to run; ``None`` lets the inference code find its default.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        site: a site overlay file (:mod:`pneumonia_monai.site_overlay`): call films at the site's
            operating point instead of the bundle's threshold.
        fhir_dir: also write each study's FHIR R5 Bundle (:mod:`pneumonia_monai.fhir`) into this folder,
            as ``<StudyInstanceUID>.json``, for the site's FHIR interface to pick up.
    """

    work_dir: Path
    destination: Destination
    ae_title: str = "PNEUMONIA"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aes: tuple[str, ...] = ()
    require_called_ae: bool = False
    stable_seconds: float = 10.0
    max_study_wait: float = 600.0
    queue_size: int = 16
    max_batch_studies: int = 8
    max_associations: int = 10
    request_timeout: float = 5.0
    max_pending_connections: int = 32
    acse_timeout: float = 10.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    send_attempts: int = 5
    retry_backoff_seconds: float = 2.0
    keep_days: float = 7.0
    keep_failed_days: float = 30.0
    heatmaps: bool = False
    masks: bool = False
    bundle: Path | None = None
    device: str = "auto"
    site: Path | None = None
    fhir_dir: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.work_dir, str | Path):
            raise TypeError(f"work_dir must be a path, got {type(self.work_dir).__name__}")
        object.__setattr__(self, "work_dir", Path(self.work_dir))
        if not isinstance(self.destination, DicomDestination | StowDestination):
            raise TypeError(
                "destination must be a DicomDestination or StowDestination, "
                f"got {type(self.destination).__name__}"
            )
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "ae_title"))
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host must be a non-empty string, got {self.host!r}")
        check_port(self.port, "port", allow_zero=True)
        if isinstance(self.allowed_calling_aes, str) or not isinstance(
            self.allowed_calling_aes, tuple | list
        ):
            raise TypeError(
                f"allowed_calling_aes must be a list of AE titles, got {self.allowed_calling_aes!r}"
            )
        allowed = tuple(check_ae_title(aet, "allowed calling AE title") for aet in self.allowed_calling_aes)
        object.__setattr__(self, "allowed_calling_aes", allowed)
        for switch in ("require_called_ae", "heatmaps", "masks"):
            object.__setattr__(self, switch, checks.flag(switch, getattr(self, switch)))
        object.__setattr__(self, "stable_seconds", _check_seconds("stable_seconds", self.stable_seconds))
        object.__setattr__(
            self, "retry_backoff_seconds", _check_seconds("retry_backoff_seconds", self.retry_backoff_seconds)
        )
        for name in ("keep_days", "keep_failed_days"):
            value = getattr(self, name)
            days = checks.non_negative_number(name, value, what="a finite number of days >= 0")
            object.__setattr__(self, name, days)
        for name in ("max_study_wait", "request_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
            object.__setattr__(self, name, _check_positive_seconds(name, getattr(self, name)))
        for name in (
            "queue_size",
            "max_batch_studies",
            "max_associations",
            "max_pending_connections",
            "send_attempts",
        ):
            checks.positive_int(name, getattr(self, name))
        if self.bundle is not None:
            if not isinstance(self.bundle, str | Path):
                raise TypeError(f"bundle must be a path, got {type(self.bundle).__name__}")
            object.__setattr__(self, "bundle", Path(self.bundle))
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a non-empty string, got {self.device!r}")
        for name in ("site", "fhir_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str | Path):
                    raise TypeError(f"{name} must be a path, got {type(value).__name__}")
                object.__setattr__(self, name, Path(value))


def _check_positive_seconds(name: str, value: object) -> float:
    return checks.positive_number(name, value, what="a number of seconds > 0")


def _check_seconds(name: str, value: object) -> float:
    return checks.non_negative_number(name, value, what="a number of seconds >= 0")


#: Keys a configuration file may hold: the fields of NodeConfig except ``destination``, which is
#: given as ``dest_ae`` or ``dest_stow``.
FILE_KEYS: frozenset[str] = frozenset(
    {f.name for f in fields(NodeConfig) if f.name != "destination"} | {"dest_ae", "dest_stow"}
)
_PATH_KEYS = ("work_dir", "bundle", "site", "fhir_dir")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON (anything else) node configuration file.

    Relative ``work_dir``, ``bundle``, ``site`` and ``fhir_dir`` paths are resolved against the file's folder.

    Returns:
        The mapping, with only keys of :data:`FILE_KEYS`.

    Raises:
        OSError: if the file cannot be read.
        ValueError: if it cannot be parsed, is not a mapping, or has unknown keys.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot parse the node configuration: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the node configuration must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown node configuration key(s) {unknown}; known: {sorted(FILE_KEYS)}")
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            data[key] = str(path.parent / value)
    return data


def config_from_mapping(values: Mapping[str, Any]) -> NodeConfig:
    """Build a :class:`NodeConfig` from a mapping with the keys of :data:`FILE_KEYS`.

    Exactly one of ``dest_ae`` (``AET@host:port``) and ``dest_stow`` (URL) must be given.

    Raises:
        ValueError, TypeError: naming the bad key or value.
    """
    unknown = sorted(set(values) - FILE_KEYS)
    if unknown:
        raise ValueError(f"unknown node configuration key(s) {unknown}")
    values = {key: value for key, value in values.items() if value is not None}
    dest_ae, dest_stow = values.pop("dest_ae", None), values.pop("dest_stow", None)
    if (dest_ae is None) == (dest_stow is None):
        raise ValueError("give exactly one destination: dest_ae (AET@host:port) or dest_stow (URL)")
    destination: Destination = (
        DicomDestination.parse(dest_ae) if dest_ae is not None else StowDestination(dest_stow)
    )
    if "work_dir" not in values:
        raise ValueError("work_dir is required")
    if "allowed_calling_aes" in values and isinstance(values["allowed_calling_aes"], list):
        values["allowed_calling_aes"] = tuple(values["allowed_calling_aes"])
    return NodeConfig(destination=destination, **values)
