"""The node's durable inbox: received instances on disk, stable-study detection, a bounded work queue.

Layout of the work folder (every move between them is an atomic :func:`os.replace` on one file
system)::

    WORK/inbox/<StudyInstanceUID>/<SOPInstanceUID>.dcm    received, not yet processed
    WORK/outbox/<StudyInstanceUID>/results/...            results of the study being processed
    WORK/done/<StudyInstanceUID>/instances/*.dcm          processed studies whose results were sent,
    WORK/done/<StudyInstanceUID>/results/...              with what was sent and the done marker
    WORK/done/<StudyInstanceUID>/status.json              {"status": "done", ...}
    WORK/failed/<StudyInstanceUID>/...                    same layout, status "failed", reason.txt
    WORK/late/<StudyInstanceUID>/<SOPInstanceUID>.dcm     instances received after processing began
    WORK/quarantine/<StudyInstanceUID>/...                an outbox entry whose status.json was corrupt

Durability: :meth:`Inbox.store` writes an instance to a temporary file in the study's folder, fsyncs
it, renames it into place and fsyncs the folder (and ``inbox/`` when the study's folder is new) before
it returns, so an instance whose C-STORE was acknowledged survives a crash or power loss.

Stability: a study is *stable* once no instance arrived for ``stable_seconds`` and none is being
written. A study that never goes quiet (a sender feeding it continuously) is taken anyway once
``max_wait`` seconds passed since its first instance arrived; what comes after is a late arrival.
:meth:`Inbox.poll` moves stable studies, oldest first, into a bounded queue that the worker
takes them from (:meth:`Inbox.next_studies`). When the queue is full the study simply stays pending in
the inbox and is offered again at the next poll: the C-STORE that brought it has already succeeded,
since the instance is on disk, and nothing is held in memory but its UID.

Restart recovery (:meth:`Inbox.open`): leftover temporary files are deleted; a study whose results
were sent but whose move to ``done/`` was interrupted is moved now (no second result); results of an
interrupted run that were not sent are deleted; an outbox entry whose ``status.json`` cannot be read
(corrupt, truncated, not a record) is moved to ``quarantine/`` with a warning, and its study, still in
the inbox, is processed again (its results have the same UIDs, so a resend is not a second report);
every study left in ``inbox/`` is pending again and
waits a full ``stable_seconds`` from the restart, so a sender that was interrupted too can send the
rest of the study first.

One result per study (the late-arrival rule): an instance is part of a study's result if it was in the
inbox when the worker began processing the study. An instance of that study received later (while it
is processed, or after it went to ``done/`` or ``failed/``) is acknowledged and kept under ``late/``,
with a warning, and does not trigger a second result; a copy of an instance already processed (a
sender's retry) is acknowledged and discarded. To have a study processed again, move its
``instances/`` folder (plus the ``late/`` files) back to ``inbox/<StudyInstanceUID>/``, remove the
``done/`` (or ``failed/``) folder and restart the node.

Retention (:meth:`Inbox.purge`, run by the node at start and every few minutes): ``done/``,
``failed/``, ``late/`` and ``quarantine/`` hold patient images, so they are kept for a set time only. A
finished study's patient data (its ``instances/`` and ``results/``) is deleted once its ``status.json``
(written when it finished) is older than the retention of its folder; the marker itself
(``status.json``, ``reason.txt``: UIDs, counts and reasons, no patient value) stays, so that a copy
sent again later is still recognised as already processed (one result per study). A file of ``late/``
goes once it is older than the retention of ``done/``; a ``quarantine/`` entry once its newest file is
older than that of ``failed/``. A retention of 0 deletes at the next purge (and the node deletes a
``done/`` study's data as soon as its results were sent).

Exactly once: results are sent before ``status.json`` is written. A crash after the destination
acknowledged the results and before that file reached the disk (a window of milliseconds) makes the
study be processed and sent again after the restart; every other crash loses nothing and duplicates
nothing.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumonia_monai import atomic, checks
from pneumonia_monai.dicom.values import check_uid

logger = logging.getLogger(__name__)

INBOX = "inbox"
OUTBOX = "outbox"
DONE = "done"
FAILED = "failed"
LATE = "late"
QUARANTINE = "quarantine"
#: Marker written last into a study's outbox folder; its presence means the study is finished.
STATUS_FILE = "status.json"
#: Human-readable reason of a failed study.
REASON_FILE = "reason.txt"
#: Folder names inside a finished study's folder.
INSTANCES = "instances"
RESULTS = "results"
#: Folder of ``outbox/`` where batches of studies are processed.
BATCH = ".batch"
#: Suffix of the temporary files of :func:`write_durable` (:func:`pneumonia_monai.atomic.atomic_open`).
TMP_SUFFIX = ".tmp"


def write_durable(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file and the file survives a crash.

    :func:`pneumonia_monai.atomic.write_bytes_atomic` with ``fsync=True``: a temporary file in the same
    folder, ``fsync``, :func:`os.replace`, then ``fsync`` of the folder.

    Args:
        path: destination.
        data: the bytes to write.

    Raises:
        TypeError: if ``data`` is not bytes.
        OSError: if writing fails (the temporary file is removed).
    """
    atomic.write_bytes_atomic(path, data, fsync=True)


class StoreOutcome(enum.Enum):
    """What :meth:`Inbox.store` did with an instance (the C-STORE succeeds in every case)."""

    #: Written to ``inbox/<study>/``.
    STORED = "stored"
    #: Its study was already being processed or finished: written to ``late/<study>/``.
    LATE = "late"
    #: A copy of an instance its study's processing already has: discarded.
    DUPLICATE = "duplicate"


class _State(enum.Enum):
    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"


@dataclass
class _Study:
    state: _State
    last_arrival: float
    writing: int = 0
    first_arrival: float = -1.0

    def __post_init__(self) -> None:
        if self.first_arrival < 0:
            self.first_arrival = self.last_arrival


@dataclass(frozen=True)
class FinishedStudy:
    """Where a finished study went.

    Attributes:
        study_uid: Study Instance UID.
        status: ``"done"`` or ``"failed"``.
        path: its folder under ``done/`` or ``failed/``.
    """

    study_uid: str
    status: str
    path: Path


class Inbox:
    """Received instances on disk, grouped by study, and the queue of studies ready to process.

    Thread-safe: :meth:`store` is called from the association threads, :meth:`poll` from a scheduler
    thread, :meth:`next_studies`, :meth:`finish` and :meth:`release` from the worker thread.

    Args:
        work_dir: the node's work folder (created if missing, by :meth:`open`).
        stable_seconds: quiet time after the last instance before a study is ready.
        queue_size: capacity of the queue of ready studies.
        max_wait: a study still receiving is ready this many seconds after its first instance arrived;
            ``None``: only once it is stable.
        clock: monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        stable_seconds: float,
        queue_size: int,
        max_wait: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(work_dir, str | Path):
            raise TypeError(f"work_dir must be a path, got {type(work_dir).__name__}")
        checks.non_negative_number("stable_seconds", stable_seconds)
        checks.positive_int("queue_size", queue_size)
        if max_wait is not None:
            checks.positive_number("max_wait", max_wait, what="a positive number of seconds or None")
        self.root = Path(work_dir)
        self.stable_seconds = float(stable_seconds)
        self.max_wait = None if max_wait is None else float(max_wait)
        self._clock = clock
        self._cond = threading.Condition()
        self._studies: dict[str, _Study] = {}
        self._queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self._queue_full_logged = False

    # ---------------------------------------------------------------------------------------------
    # folders

    def folder(self, name: str) -> Path:
        """Return ``WORK/<name>``: ``inbox``, ``outbox``, ``done``, ``failed``, ``late`` or ``quarantine``."""
        if name not in {INBOX, OUTBOX, DONE, FAILED, LATE, QUARANTINE}:
            raise ValueError(f"unknown work folder {name!r}")
        return self.root / name

    def study_dir(self, study_uid: str) -> Path:
        """Return the inbox folder of a study."""
        return self.folder(INBOX) / check_uid("study_uid", study_uid)

    def results_dir(self, study_uid: str) -> Path:
        """Return the folder the processing of a study writes its results to (``outbox/<uid>/results``)."""
        return self.folder(OUTBOX) / check_uid("study_uid", study_uid) / RESULTS

    def batch_dir(self) -> Path:
        """Return an empty ``outbox/.batch`` folder, where a batch of studies is processed."""
        folder = self.folder(OUTBOX) / BATCH
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    # ---------------------------------------------------------------------------------------------
    # start-up

    def open(self) -> list[str]:
        """Create the folders and recover what a previous run left (see the module docstring).

        Returns:
            The Study Instance UIDs found pending in the inbox, sorted.
        """
        for name in (INBOX, OUTBOX, DONE, FAILED, LATE, QUARANTINE):
            self.folder(name).mkdir(parents=True, exist_ok=True)
        for outbox in sorted(p for p in self.folder(OUTBOX).iterdir() if p.is_dir()):
            if (outbox / STATUS_FILE).is_file():
                try:
                    status = _recorded_status(outbox / STATUS_FILE)
                except (OSError, ValueError) as exc:
                    target = _free_name(self.folder(QUARANTINE), outbox.name)
                    outbox.replace(target)
                    logger.warning(
                        "outbox entry %s: %s is unreadable (%s); quarantined in %s, the study is processed "
                        "again",
                        outbox.name,
                        STATUS_FILE,
                        exc,
                        target,
                    )
                    continue
                logger.info("completing the interrupted move of study %s to %s/", outbox.name, status)
                self._complete(outbox.name, status)
            else:
                logger.info("discarding unsent results of study %s from an interrupted run", outbox.name)
                shutil.rmtree(outbox)
        for leftover in self.folder(OUTBOX).iterdir():
            if leftover.is_file():
                leftover.unlink()
        now = self._clock()
        recovered = []
        for study in sorted(p for p in self.folder(INBOX).iterdir() if p.is_dir()):
            for tmp in study.glob(f".*{TMP_SUFFIX}"):
                logger.debug("removing the partial file %s", tmp)
                tmp.unlink()
            if not any(study.glob("*.dcm")):
                study.rmdir()
                continue
            try:
                uid = check_uid("inbox folder name", study.name)
            except ValueError:
                logger.warning("ignoring %s: its name is not a Study Instance UID", study)
                continue
            with self._cond:
                self._studies[uid] = _Study(_State.PENDING, now)
            recovered.append(uid)
        if recovered:
            logger.info("resuming %d study(ies) left in the inbox", len(recovered))
        return recovered

    # ---------------------------------------------------------------------------------------------
    # receiving

    def _is_finished(self, study_uid: str) -> bool:
        return (self.folder(DONE) / study_uid).exists() or (self.folder(FAILED) / study_uid).exists()

    def _already_processed(self, study_uid: str, name: str) -> bool:
        return (
            any(
                (folder / study_uid / INSTANCES / name).exists()
                for folder in (self.folder(DONE), self.folder(FAILED))
            )
            or (self.study_dir(study_uid) / name).exists()
        )

    def store(self, study_uid: str, sop_instance_uid: str, data: bytes) -> StoreOutcome:
        """Write one received instance durably, in the inbox or, for a late arrival, under ``late/``.

        Args:
            study_uid: its Study Instance UID.
            sop_instance_uid: its SOP Instance UID (the file name).
            data: the DICOM Part 10 file (preamble, file meta information, data set).

        Returns:
            What was done with it.

        Raises:
            ValueError: if a UID is not usable as a file name.
            OSError: if it could not be written (the caller reports a failure to the sender).
        """
        study_uid = check_uid("StudyInstanceUID", study_uid)
        name = check_uid("SOPInstanceUID", sop_instance_uid) + ".dcm"
        with self._cond:
            study = self._studies.get(study_uid)
            late = (study is not None and study.state is _State.PROCESSING) or (
                study is None and self._is_finished(study_uid)
            )
            if not late:
                if study is None:
                    study = self._studies[study_uid] = _Study(_State.PENDING, self._clock())
                study.writing += 1
                study.last_arrival = self._clock()
        if late or study is None:  # study is None only when late: a finished study, not in memory
            if self._already_processed(study_uid, name):
                logger.info("study %s: discarded a copy of instance %s, already processed", study_uid, name)
                return StoreOutcome.DUPLICATE
            folder = self.folder(LATE) / study_uid
            atomic.make_dir_durable(folder)
            write_durable(folder / name, data)
            logger.warning(
                "study %s: instance %s arrived after the study was processed; kept in %s, no new result",
                study_uid,
                name,
                folder,
            )
            return StoreOutcome.LATE
        try:
            folder = self.study_dir(study_uid)
            atomic.make_dir_durable(folder)
            write_durable(folder / name, data)
        finally:
            with self._cond:
                study.writing -= 1
                study.last_arrival = self._clock()
                self._cond.notify_all()
        logger.debug("study %s: stored instance %s", study_uid, name)
        return StoreOutcome.STORED

    # ---------------------------------------------------------------------------------------------
    # scheduling

    def poll(self) -> list[str]:
        """Queue the studies that became stable, oldest first, as long as the queue has room.

        Returns:
            The Study Instance UIDs queued by this call.
        """
        now = self._clock()
        queued: list[str] = []
        waiting = 0
        overdue: list[str] = []
        with self._cond:
            ready = []
            for uid, study in self._studies.items():
                if study.state is not _State.PENDING:
                    continue
                if study.writing == 0 and now - study.last_arrival >= self.stable_seconds:
                    ready.append((study.last_arrival, uid))
                elif self.max_wait is not None and now - study.first_arrival >= self.max_wait:
                    ready.append((study.first_arrival, uid))
                    overdue.append(uid)
            ready.sort()
            for _, uid in ready:
                try:
                    self._queue.put_nowait(uid)
                except queue.Full:
                    waiting = len(ready) - len(queued)
                    break
                self._studies[uid].state = _State.QUEUED
                queued.append(uid)
            log_full = waiting > 0 and not self._queue_full_logged
            self._queue_full_logged = waiting > 0
        for uid in queued:
            if uid in overdue:
                logger.warning(
                    "study %s still receiving %.0f s after its first instance: queued (max wait); "
                    "instances arriving from now on are late",
                    uid,
                    self.max_wait,
                )
            else:
                logger.info("study %s is stable: queued", uid)
        if log_full:
            logger.info(
                "work queue full (%d): %d stable study(ies) wait in the inbox", self._queue.maxsize, waiting
            )
        return queued

    def next_studies(self, max_count: int = 1, timeout: float | None = None) -> list[str]:
        """Take queued studies (waiting for the first one) and mark them as being processed.

        Instances of these studies received from now on are late arrivals; this waits for the writes of
        instances accepted before to end, so the studies' inbox folders no longer change. Each study
        gets an empty :meth:`results_dir`.

        Args:
            max_count: take at most this many (the first, then those already queued).
            timeout: seconds to wait for the first study; ``None`` waits forever.

        Returns:
            The Study Instance UIDs, in queue order; empty if none came within ``timeout``.
        """
        checks.positive_int("max_count", max_count)
        try:
            uids = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(uids) < max_count:
            try:
                uids.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._cond:
            studies = [self._studies[uid] for uid in uids]
            for study in studies:
                study.state = _State.PROCESSING
            self._cond.wait_for(lambda: all(study.writing == 0 for study in studies))
        for uid in uids:
            results = self.results_dir(uid)
            if results.parent.exists():
                shutil.rmtree(results.parent)
            results.mkdir(parents=True)
        return uids

    def queued_count(self) -> int:
        """Return how many stable studies wait in the work queue for the worker."""
        return self._queue.qsize()

    def pending_count(self) -> int:
        """Return how many studies are received but not finished (pending, queued or processing)."""
        with self._cond:
            return len(self._studies)

    # ---------------------------------------------------------------------------------------------
    # finishing

    def release(self, study_uid: str) -> None:
        """Give a study back to the inbox unfinished (the node is stopping): it is resumed at restart."""
        study_uid = check_uid("study_uid", study_uid)
        outbox = self.folder(OUTBOX) / study_uid
        if outbox.exists():
            shutil.rmtree(outbox)
        with self._cond:
            study = self._studies.get(study_uid)
            if study is not None:
                study.state = _State.PENDING
                study.last_arrival = self._clock()
        logger.info("study %s left in the inbox, to be resumed", study_uid)

    def finish(
        self,
        study_uid: str,
        status: str,
        *,
        reason: str = "",
        results: Sequence[Path] = (),
        details: dict[str, Any] | None = None,
    ) -> FinishedStudy:
        """Record the end of a study's processing and move it to ``done/`` or ``failed/``.

        ``status.json`` is written (durably) into the study's outbox folder first; then the inbox folder
        is moved into it as ``instances/`` and the whole folder to ``done/`` or ``failed/``. An
        interruption between those steps is completed by :meth:`open`.

        Args:
            study_uid: the study.
            status: ``"done"`` (its results were sent, or it had none) or ``"failed"``.
            reason: why it failed, or why it has no result; also written to ``reason.txt`` on failure.
            results: the result files (for the record: their names relative to the results folder).
            details: further JSON-serialisable facts for ``status.json`` (no patient data).

        Returns:
            Where the study went.
        """
        study_uid = check_uid("study_uid", study_uid)
        if status not in {DONE, FAILED}:
            raise ValueError(f"status must be {DONE!r} or {FAILED!r}, got {status!r}")
        outbox = self.folder(OUTBOX) / study_uid
        outbox.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "status": status,
            "study_instance_uid": study_uid,
            "reason": reason,
            "results": [_relative(Path(path), outbox / RESULTS) for path in results],
            "instances": sorted(p.name for p in self.study_dir(study_uid).glob("*.dcm")),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(details or {}),
        }
        if status == FAILED:
            write_durable(outbox / REASON_FILE, (reason.rstrip() + "\n").encode("utf-8"))
        write_durable(outbox / STATUS_FILE, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        return self._complete(study_uid, status)

    # ---------------------------------------------------------------------------------------------
    # retention

    def purge(
        self,
        *,
        keep_seconds: float,
        keep_failed_seconds: float,
        now: float | None = None,
    ) -> PurgeReport:
        """Delete the patient data older than the retention (see the module docstring).

        Args:
            keep_seconds: how long ``done/`` studies and ``late/`` files are kept.
            keep_failed_seconds: how long ``failed/`` studies and ``quarantine/`` entries are kept.
            now: the current time (seconds since the epoch, as file times are); default the clock's.

        Returns:
            What was deleted. An entry that cannot be read or deleted is logged and left for the next
            purge.
        """
        for name, value in (("keep_seconds", keep_seconds), ("keep_failed_seconds", keep_failed_seconds)):
            checks.non_negative_number(name, value, what="a finite number of seconds >= 0")
        now = time.time() if now is None else float(now)
        studies = late_files = quarantined = 0
        for folder, keep in ((DONE, keep_seconds), (FAILED, keep_failed_seconds)):
            root = self.folder(folder)
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                if not any((entry / part).exists() for part in (INSTANCES, RESULTS)):
                    continue
                try:
                    finished = (entry / STATUS_FILE).stat().st_mtime
                except OSError:
                    continue  # not a finished study's folder (or not readable): never deleted blindly
                if now - finished >= keep and self._delete_study_data(entry):
                    studies += 1
        late = self.folder(LATE)
        if late.is_dir():
            for study in sorted(p for p in late.iterdir() if p.is_dir()):
                for path in sorted(study.iterdir()):
                    try:
                        if path.is_file() and now - path.stat().st_mtime >= keep_seconds:
                            path.unlink()
                            late_files += 1
                    except OSError as exc:
                        logger.warning("retention: cannot delete %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    study.rmdir()  # only once empty
        quarantine = self.folder(QUARANTINE)
        if quarantine.is_dir():
            for entry in sorted(p for p in quarantine.iterdir() if p.is_dir()):
                if now - _newest_mtime(entry) >= keep_failed_seconds:
                    try:
                        shutil.rmtree(entry)
                        quarantined += 1
                    except OSError as exc:
                        logger.warning("retention: cannot delete %s: %s", entry, exc)
        report = PurgeReport(studies, late_files, quarantined)
        if report.total:
            logger.info(
                "retention: deleted the images of %d finished study(ies), %d late file(s), %d quarantined "
                "entry(ies)",
                studies,
                late_files,
                quarantined,
            )
        return report

    def delete_study_data(self, finished: FinishedStudy) -> bool:
        """Delete a finished study's instances and results now (retention 0); keep its marker."""
        return self._delete_study_data(finished.path)

    def _delete_study_data(self, entry: Path) -> bool:
        try:
            for part in (INSTANCES, RESULTS):
                if (entry / part).exists():
                    with contextlib.suppress(FileNotFoundError):  # a concurrent purge got there first
                        shutil.rmtree(entry / part)
        except OSError as exc:
            logger.warning("retention: cannot delete the data of %s: %s", entry, exc)
            return False
        logger.debug("retention: deleted the instances and results of %s", entry)
        return True

    def _complete(self, study_uid: str, status: str) -> FinishedStudy:
        outbox = self.folder(OUTBOX) / study_uid
        target_root = self.folder(DONE if status == DONE else FAILED)
        with self._cond:
            inbox = self.folder(INBOX) / study_uid
            if inbox.exists() and not (outbox / INSTANCES).exists():
                inbox.replace(outbox / INSTANCES)
            target = target_root / study_uid
            suffix = 2
            while target.exists():
                target = target_root / f"{study_uid}-{suffix}"
                suffix += 1
            outbox.replace(target)
            self._studies.pop(study_uid, None)
        for folder in (self.folder(INBOX), self.folder(OUTBOX), target_root):
            atomic.fsync_dir(folder)
        if target.name != study_uid:
            logger.warning("study %s was finished before; this run's record is %s", study_uid, target)
        logger.info("study %s %s: %s", study_uid, status, target)
        return FinishedStudy(study_uid, status, target)


@dataclass(frozen=True)
class PurgeReport:
    """What :meth:`Inbox.purge` deleted.

    Attributes:
        studies: ``done/`` and ``failed/`` entries whose instances and results were deleted.
        late_files: files deleted from ``late/``.
        quarantined: ``quarantine/`` entries deleted.
    """

    studies: int = 0
    late_files: int = 0
    quarantined: int = 0

    @property
    def total(self) -> int:
        """Everything deleted."""
        return self.studies + self.late_files + self.quarantined


def _recorded_status(path: Path) -> str:
    """The ``status`` of a ``status.json`` marker.

    Raises:
        OSError: if it cannot be read.
        ValueError: if it is not JSON, not an object, or its status is not ``done`` or ``failed``.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"not a JSON record: {type(exc).__name__}") from exc
    status = record.get("status") if isinstance(record, dict) else None
    if status not in (DONE, FAILED):
        raise ValueError(f"no status 'done' or 'failed' in it (got {type(record).__name__})")
    return str(status)


def _newest_mtime(folder: Path) -> float:
    """The modification time of the newest file under ``folder`` (the folder's own if it has none)."""
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            newest = max(newest, path.stat().st_mtime)
    return newest


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name-2``, ``-3``... the first that does not exist."""
    target = folder / name
    suffix = 2
    while target.exists():
        target = folder / f"{name}-{suffix}"
        suffix += 1
    return target


def _relative(path: Path, start: Path) -> str:
    try:
        return path.relative_to(start).as_posix()
    except ValueError:
        return path.name
