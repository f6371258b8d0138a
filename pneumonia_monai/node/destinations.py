"""Sending result files to where they belong: a DICOM Storage SCP (C-STORE) or a DICOMweb service (STOW-RS).

Both senders take Part 10 files and either deliver every one of them or raise :class:`SendError`;
:func:`send_with_retries` offers the files again, with exponential backoff, a bounded number of times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE
from pynetdicom.presentation import build_context
from pynetdicom.status import code_to_category

from pneumonia_monai import checks
from pneumonia_monai.dicomweb.pull import DicomWebError, store_instances
from pneumonia_monai.node.config import DicomDestination, StowDestination, check_ae_title

logger = logging.getLogger(__name__)

#: pynetdicom's limit on the presentation contexts one association may propose.
MAX_REQUESTED_CONTEXTS = 128


class SendError(RuntimeError):
    """The destination did not take every file; the message says which and why."""


class SendInterruptedError(RuntimeError):
    """Retrying was given up because the node is stopping; nothing is known to be lost."""


@runtime_checkable
class ResultDestination(Protocol):
    """Somewhere result files can be sent to."""

    def send(self, paths: Sequence[Path]) -> None:
        """Deliver every file of ``paths`` or raise :class:`SendError`."""
        ...


def _check_paths(paths: Sequence[str | Path]) -> list[Path]:
    if isinstance(paths, str | Path) or not isinstance(paths, Sequence):
        raise TypeError(f"paths must be a sequence of file paths, got {type(paths).__name__}")
    checked = [Path(path) for path in paths]
    missing = [str(path) for path in checked if not path.is_file()]
    if missing:
        raise ValueError(f"not files: {missing}")
    return checked


class CStoreDestination:
    """Send files with C-STORE to a Storage SCP, in their own transfer syntax (no transcoding).

    One association per :meth:`send`; one presentation context per (SOP class, transfer syntax) of the
    files, so a call may carry at most :data:`MAX_REQUESTED_CONTEXTS` different pairs.

    Args:
        destination: the SCP.
        calling_ae_title: this node's AE title.
        timeout: seconds for the association, each DIMSE message and the network.
    """

    def __init__(
        self, destination: DicomDestination, *, calling_ae_title: str, timeout: float = 30.0
    ) -> None:
        if not isinstance(destination, DicomDestination):
            raise TypeError(f"destination must be a DicomDestination, got {type(destination).__name__}")
        checks.positive_number("timeout", timeout, what="a positive number of seconds")
        self.destination = destination
        self.calling_ae_title = check_ae_title(calling_ae_title, "calling_ae_title")
        self.timeout = float(timeout)

    def __str__(self) -> str:
        return f"C-STORE {self.destination}"

    def send(self, paths: Sequence[str | Path]) -> None:
        """Send every file; raise :class:`SendError` unless each one got a success or warning status.

        Raises:
            TypeError, ValueError: if ``paths`` is not a sequence of existing files.
            SendError: if a file is not DICOM, the association fails or a C-STORE is not successful.
        """
        files = _check_paths(paths)
        if not files:
            return
        headers = []
        for path in files:
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError) as exc:
                raise SendError(f"{path.name}: not a readable DICOM file: {exc}") from exc
            headers.append((str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        pairs = sorted(set(headers))
        if len(pairs) > MAX_REQUESTED_CONTEXTS:
            raise SendError(
                f"{len(pairs)} (SOP class, transfer syntax) pairs exceed the {MAX_REQUESTED_CONTEXTS} "
                "presentation contexts of one association"
            )
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.requested_contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
        dest = self.destination
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            raise SendError(f"no association with {dest}: rejected, aborted or unreachable")
        try:
            for path in files:
                status = assoc.send_c_store(path)
                code = getattr(status, "Status", None)
                if code is None:
                    raise SendError(f"{path.name}: no C-STORE response from {dest} (timeout or abort)")
                category = code_to_category(code)
                if category not in {"Success", "Warning"}:
                    raise SendError(f"{path.name}: {dest} answered C-STORE status 0x{code:04X} ({category})")
                if category == "Warning":
                    logger.warning("%s stored %s with warning status 0x%04X", dest, path.name, code)
        finally:
            if assoc.is_established:
                assoc.release()
        logger.info("sent %d file(s) to %s", len(files), dest)


class StowRsDestination:
    """Send files with STOW-RS (dicomweb-client) to a DICOMweb service.

    Args:
        destination: the service.
        headers: extra HTTP headers (an ``Authorization`` header, say).
    """

    def __init__(self, destination: StowDestination, *, headers: dict[str, str] | None = None) -> None:
        if not isinstance(destination, StowDestination):
            raise TypeError(f"destination must be a StowDestination, got {type(destination).__name__}")
        self.destination = destination
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return f"STOW-RS {self.destination}"

    def send(self, paths: Sequence[str | Path]) -> None:
        """Store every file; raise :class:`SendError` unless the service stored each one.

        Raises:
            TypeError, ValueError: if ``paths`` is not a sequence of existing files.
            SendError: if the request fails or the service reports a file as not stored.
        """
        files = _check_paths(paths)
        if not files:
            return
        try:
            store_instances(self.destination.url, files, headers=self.headers)
        except DicomWebError as exc:
            raise SendError(f"STOW-RS to {self.destination} failed: {exc}") from exc
        logger.info("sent %d file(s) to %s", len(files), self.destination)


def make_destination(
    destination: DicomDestination | StowDestination, *, calling_ae_title: str
) -> CStoreDestination | StowRsDestination:
    """Return the sender for a configured destination."""
    if isinstance(destination, DicomDestination):
        return CStoreDestination(destination, calling_ae_title=calling_ae_title)
    if isinstance(destination, StowDestination):
        return StowRsDestination(destination)
    raise TypeError(
        f"destination must be a DicomDestination or StowDestination, got {type(destination).__name__}"
    )


def send_with_retries(
    destination: ResultDestination,
    paths: Sequence[Path],
    *,
    attempts: int,
    backoff_seconds: float,
    stop: threading.Event | None = None,
) -> int:
    """Send ``paths``, trying again after ``backoff_seconds``, doubled each time, up to ``attempts`` times.

    Args:
        destination: where to send.
        paths: the files.
        attempts: how many tries in all (1 = no retry).
        backoff_seconds: wait before the second try.
        stop: when set during a wait, give up with :class:`SendInterruptedError`.

    Returns:
        The number of the attempt that succeeded.

    Raises:
        SendError: the last attempt's error, with the number of attempts in its message.
        SendInterruptedError: if ``stop`` was set while waiting to try again.
    """
    checks.positive_int("attempts", attempts)
    checks.non_negative_number("backoff_seconds", backoff_seconds)
    stop = stop or threading.Event()
    attempt = 0
    while True:
        attempt += 1
        try:
            destination.send(paths)
        except SendError as exc:
            if attempt >= attempts:
                raise SendError(f"{exc} (gave up after {attempts} attempt(s))") from exc
            wait = backoff_seconds * 2 ** (attempt - 1)
            logger.warning(
                "attempt %d/%d to send to %s failed: %s; retrying in %.1f s",
                attempt,
                attempts,
                destination,
                exc,
                wait,
            )
            if stop.wait(wait):
                raise SendInterruptedError(
                    f"stopping: gave up sending to {destination} after {attempt} attempt(s)"
                ) from exc
        else:
            return attempt
