"""Pull mode: find studies in a DICOMweb service (QIDO-RS), fetch one (WADO-RS), store results (STOW-RS).

Thin, checked wrappers around dicomweb-client's :class:`~dicomweb_client.api.DICOMwebClient`::

    studies = query_studies(url, {"ModalitiesInStudy": "CR", "StudyDate": "20240101-20240131"})
    uid = str(studies[0].StudyInstanceUID)
    paths = retrieve_study(url, uid, Path("in") / uid)          # one Part 10 file per instance
    summary = run_inference([Path("in") / uid], "out")           # pneumonia_monai.inference.runner
    store_instances(url, summary.sr_paths)                        # the report goes back to the archive

``url`` is the service's base URL (Orthanc: ``http://host:8042/dicom-web``). Every function takes
``headers`` for what the service needs (``{"Authorization": "Bearer ..."}``) and raises
:class:`DicomWebError` when the service fails or refuses, at once: requests are not retried here.
Nothing here logs patient data: query filters and results are not logged (dicomweb-client itself logs
request URLs at debug level).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from pneumonia_monai import checks
from pneumonia_monai.dicom.values import check_uid
from pneumonia_monai.dicom.writer import write_dataset_atomic

logger = logging.getLogger(__name__)

#: Ask WADO-RS for the instances as stored (no transcoding by the server).
ORIGINAL_TRANSFER_SYNTAX = "*"


class DicomWebError(RuntimeError):
    """A DICOMweb request failed or was refused; the message says which and why."""


def _client(url: str, headers: dict[str, str] | None) -> DICOMwebClient:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"url must be the http(s) base URL of a DICOMweb service, got {url!r}")
    if headers is not None and (
        not isinstance(headers, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise TypeError(f"headers must be a dict of str to str, got {headers!r}")
    client = DICOMwebClient(url=url, headers=headers)
    # No hidden retries: a failure is raised at once, and the caller decides (the node retries with
    # its own bounded backoff; dicomweb-client's default would wait some 30 s on a refused connection).
    client.set_http_retry_params(retry=False)
    return client


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"  # no credentials


def query_studies(
    url: str,
    filters: Mapping[str, str] | None = None,
    *,
    limit: int | None = None,
    fields: Sequence[str] = (),
    headers: dict[str, str] | None = None,
) -> list[Dataset]:
    """Search for studies with QIDO-RS.

    Args:
        url: base URL of the DICOMweb service.
        filters: attribute matching by DICOM keyword, with QIDO values: ``{"StudyDate":
            "20240101-20240131", "ModalitiesInStudy": "CR", "AccessionNumber": "A123"}``. A mapping, not
            keyword arguments, so that no key (``fields``, ``limit``) can land on a parameter of its own.
        limit: at most this many studies; ``None`` returns every match (all pages).
        fields: further attributes to return, by keyword (QIDO ``includefield``).
        headers: extra HTTP headers.

    Returns:
        One data set per study (Study Instance UID, Study Date, Modalities in Study...), as the service
        answered, in its order.

    Raises:
        ValueError: for an unknown keyword, a non-string filter value, a bad ``url`` or ``limit``.
        TypeError: if ``filters`` is not a mapping or ``fields`` is a single string.
        DicomWebError: if the request fails.
    """
    if filters is None:
        filters = {}
    if not isinstance(filters, Mapping):
        raise TypeError(f"filters must be a mapping of DICOM keyword to QIDO value, got {filters!r}")
    if isinstance(fields, str):
        raise TypeError(f"fields must be a sequence of DICOM keywords, not one string: {fields!r}")
    for keyword, value in [*filters.items(), *((field, "") for field in fields)]:
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        if not isinstance(value, str):
            raise ValueError(f"filter {keyword} must be a string, got {value!r}")
    if limit is not None:
        checks.positive_int("limit", limit, what="a positive int or None")
    client = _client(url, headers)
    try:
        found = client.search_for_studies(
            search_filters=dict(filters) or None,
            fields=list(fields) or None,
            limit=limit,
            get_remaining=limit is None,
        )
    except requests.RequestException as exc:
        raise DicomWebError(f"QIDO-RS search for studies at {_where(url)} failed: {exc}") from exc
    studies = [Dataset.from_json(item) for item in found]
    if limit is not None:
        studies = studies[:limit]
    logger.info("QIDO-RS at %s: %d study(ies) found", _where(url), len(studies))
    return studies


def retrieve_study(
    url: str,
    study_uid: str,
    dest: str | Path,
    *,
    transfer_syntax: str = ORIGINAL_TRANSFER_SYNTAX,
    headers: dict[str, str] | None = None,
) -> list[Path]:
    """Fetch every instance of a study with WADO-RS into ``dest/<SOPInstanceUID>.dcm``.

    Each file is written atomically (temporary file, then rename), so ``dest`` never holds a partial
    file; an instance already there is overwritten. The folder can be given to
    :func:`pneumonia_monai.inference.runner.run_inference` as it is.

    Args:
        url: base URL of the DICOMweb service.
        study_uid: Study Instance UID.
        dest: folder to write to (created if missing).
        transfer_syntax: transfer syntax to ask for; ``"*"`` (default): as stored, no server transcoding.
        headers: extra HTTP headers.

    Returns:
        The files written, sorted.

    Raises:
        ValueError: for a bad UID or url.
        DicomWebError: if the request fails, the study is not found or holds no instance, or an
            instance comes back without SOP Instance UID or transfer syntax.
    """
    study_uid = check_uid("study_uid", study_uid)
    if transfer_syntax != ORIGINAL_TRANSFER_SYNTAX:
        check_uid("transfer_syntax", transfer_syntax)
    dest = Path(dest)
    client = _client(url, headers)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for ds in client.iter_study(study_uid, media_types=(("application/dicom", transfer_syntax),)):
            written.append(_write_instance(ds, dest, study_uid))
    except requests.RequestException as exc:
        raise DicomWebError(
            f"WADO-RS retrieval of study {study_uid} from {_where(url)} failed: {exc}"
        ) from exc
    if not written:
        raise DicomWebError(f"WADO-RS: study {study_uid} at {_where(url)} has no instance")
    logger.info("WADO-RS: %d instance(s) of study %s written to %s", len(written), study_uid, dest)
    return sorted(written)


def _write_instance(ds: Dataset, dest: Path, study_uid: str, path: Path | None = None) -> Path:
    """Write an instance to ``path`` (default ``dest/<SOPInstanceUID>.dcm``) atomically, its meta checked."""
    try:
        sop_uid = check_uid("SOPInstanceUID", ds.get("SOPInstanceUID"))
    except ValueError as exc:
        raise DicomWebError(f"WADO-RS: an instance of study {study_uid} has no usable {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise DicomWebError(f"WADO-RS: instance {sop_uid} came without file meta information")
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    path = dest / f"{sop_uid}.dcm" if path is None else path
    write_dataset_atomic(ds, path)
    return path


def store_instances(
    url: str, paths: Sequence[str | Path], *, headers: dict[str, str] | None = None
) -> list[str]:
    """Store Part 10 files with STOW-RS, in one request, and check that the service stored every one.

    Args:
        url: base URL of the DICOMweb service.
        paths: the files (an SR, Secondary Captures...).
        headers: extra HTTP headers.

    Returns:
        The SOP Instance UIDs stored, in the order of ``paths``.

    Raises:
        TypeError, ValueError: if ``paths`` is not a sequence of DICOM files, or for a bad url.
        DicomWebError: if the request fails, or the response lists an instance as failed or leaves one
            out.
    """
    if isinstance(paths, str | Path) or not isinstance(paths, Sequence):
        raise TypeError(f"paths must be a sequence of file paths, got {type(paths).__name__}")
    datasets = []
    for path in paths:
        try:
            datasets.append(dcmread(path))
        except (InvalidDicomError, OSError) as exc:
            raise ValueError(f"{path}: not a readable DICOM file: {exc}") from exc
    client = _client(url, headers)
    if not datasets:
        return []
    sent = [str(ds.SOPInstanceUID) for ds in datasets]
    try:
        response = client.store_instances(datasets)
    except requests.RequestException as exc:
        raise DicomWebError(f"STOW-RS to {_where(url)} failed: {exc}") from exc
    failed = [
        f"{item.get('ReferencedSOPInstanceUID', '?')} (reason 0x{int(item.get('FailureReason', 0)):04X})"
        for item in response.get("FailedSOPSequence", [])
    ]
    if failed:
        raise DicomWebError(f"STOW-RS to {_where(url)}: instance(s) not stored: {', '.join(failed)}")
    stored = _referenced(response)
    if stored is not None:
        missing = [uid for uid in sent if uid not in stored]
        if missing:
            raise DicomWebError(f"STOW-RS to {_where(url)}: the response does not list {missing} as stored")
    logger.info("STOW-RS to %s: %d instance(s) stored", _where(url), len(sent))
    return sent


def _referenced(response: Dataset) -> set[str] | None:
    """SOP Instance UIDs of the response's Referenced SOP Sequence; ``None`` if it has none at all."""
    items: Any = response.get("ReferencedSOPSequence")
    if items is None:
        return None
    return {str(item.get("ReferencedSOPInstanceUID", "")) for item in items}


def retrieve_instance(
    url: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    path: str | Path,
    *,
    transfer_syntax: str = ORIGINAL_TRANSFER_SYNTAX,
    headers: dict[str, str] | None = None,
) -> Path:
    """Fetch one instance with WADO-RS and write it (atomically) to the file ``path``.

    Args:
        url: base URL of the DICOMweb service.
        study_uid: Study Instance UID (0020,000D) of the instance.
        series_uid: Series Instance UID (0020,000E).
        sop_uid: SOP Instance UID (0008,0018).
        path: the file to write (its folder is created).
        transfer_syntax: transfer syntax to ask for; ``"*"`` (default): as stored, no server transcoding.
        headers: extra HTTP headers.

    Returns:
        ``path``.

    Raises:
        ValueError: for a bad UID or url.
        DicomWebError: if the request fails, or the instance comes back with another SOP Instance UID or
            without transfer syntax.
    """
    study_uid = check_uid("study_uid", study_uid)
    series_uid = check_uid("series_uid", series_uid)
    sop_uid = check_uid("sop_uid", sop_uid)
    if transfer_syntax != ORIGINAL_TRANSFER_SYNTAX:
        check_uid("transfer_syntax", transfer_syntax)
    client = _client(url, headers)
    try:
        ds = client.retrieve_instance(
            study_uid, series_uid, sop_uid, media_types=(("application/dicom", transfer_syntax),)
        )
    except requests.RequestException as exc:
        raise DicomWebError(
            f"WADO-RS retrieval of instance {sop_uid} from {_where(url)} failed: {exc}"
        ) from exc
    if str(ds.get("SOPInstanceUID", "")) != sop_uid:
        raise DicomWebError(f"WADO-RS: asked for instance {sop_uid}, got another one")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_instance(ds, path.parent, study_uid, path)
