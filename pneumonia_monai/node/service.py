"""The DICOM node: a Storage SCP feeding an inbox, a worker processing stable studies, a result sender.

Threads: pynetdicom's association threads store instances (:class:`~pneumonia_monai.node.scp.StorageSCP`);
a scheduler thread moves studies that became stable into the bounded queue
(:meth:`~pneumonia_monai.node.inbox.Inbox.poll`); one worker thread takes them and runs the
:class:`~pneumonia_monai.node.processor.StudyProcessor` (on every study ready at that moment, up to
``max_batch_studies``, when it is a :class:`~pneumonia_monai.node.processor.BatchStudyProcessor`); then,
study by study, it sends the results with retries and moves the study to ``done/`` only once they were
sent, or to ``failed/`` with the reason. The scheduler also applies the retention
(:meth:`~pneumonia_monai.node.inbox.Inbox.purge`, ``keep_days`` / ``keep_failed_days``) at start and
every ``purge_interval`` seconds; with ``keep_days`` 0 the worker deletes a study's images as soon as
its results were sent.

Stopping (:meth:`DicomNode.stop`, what ``serve`` does on SIGTERM): the listening socket is closed
first, open associations get a grace period to finish (then are aborted: an instance whose C-STORE
was not answered stays the sender's), the worker finishes (and sends) the studies it is processing
and takes no other; what is still in the inbox is resumed by the next start. A study whose sending
was waiting for a retry is left in the inbox, not failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pneumonia_monai import checks
from pneumonia_monai.node.config import NodeConfig
from pneumonia_monai.node.destinations import (
    ResultDestination,
    SendError,
    SendInterruptedError,
    make_destination,
    send_with_retries,
)
from pneumonia_monai.node.inbox import DONE, FAILED, FinishedStudy, Inbox, PurgeReport
from pneumonia_monai.node.processor import BatchStudyProcessor, InferenceProcessor, StudyProcessor
from pneumonia_monai.node.scp import StorageSCP
from pneumonia_monai.site_overlay import read_site_overlay

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400.0


class DicomNode:
    """Receive studies over DICOM, process each stable one once, send its results.

    Args:
        config: the node configuration.
        processor: what to do with a study; default :class:`InferenceProcessor` from the configuration.
        destination: where results go; default the configuration's destination.
        poll_interval: seconds between two looks for stable studies.
        transfer_syntaxes: the syntaxes the SCP accepts; default
            :func:`~pneumonia_monai.node.scp.accepted_transfer_syntaxes`.
        purge_interval: seconds between two applications of the retention.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        processor: StudyProcessor | None = None,
        destination: ResultDestination | None = None,
        poll_interval: float = 0.2,
        transfer_syntaxes: Sequence[str] | None = None,
        purge_interval: float = 300.0,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, got {type(config).__name__}")
        if processor is not None and not isinstance(processor, StudyProcessor):
            raise TypeError(f"processor must have a process(study_dir, out_dir) method, got {processor!r}")
        if destination is not None and not isinstance(destination, ResultDestination):
            raise TypeError(f"destination must have a send(paths) method, got {destination!r}")
        checks.positive_number("poll_interval", poll_interval, what="a positive number of seconds")
        checks.positive_number("purge_interval", purge_interval, what="a positive number of seconds")
        self.config = config
        self.inbox = Inbox(
            config.work_dir,
            stable_seconds=config.stable_seconds,
            queue_size=config.queue_size,
            max_wait=config.max_study_wait,
        )
        self.processor: StudyProcessor = processor or InferenceProcessor(
            bundle=config.bundle,
            device=config.device,
            heatmaps=config.heatmaps,
            site=None if config.site is None else read_site_overlay(config.site),
            fhir_dir=config.fhir_dir,
            masks=config.masks,
        )
        self.destination: ResultDestination = destination or make_destination(
            config.destination, calling_ae_title=config.ae_title
        )
        self.scp = StorageSCP(config, self.inbox, transfer_syntaxes=transfer_syntaxes)
        self.poll_interval = float(poll_interval)
        self.purge_interval = float(purge_interval)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._finished_lock = threading.Lock()
        #: Studies finished since the start, in order.
        self.finished: list[FinishedStudy] = []

    @property
    def port(self) -> int:
        """The port the SCP listens on."""
        return self.scp.port

    def start(self) -> None:
        """Recover the inbox, listen for associations and start the scheduler and the worker.

        Raises:
            OSError: if the work folder cannot be used or the address cannot be bound.
        """
        if self._threads:
            raise RuntimeError("the node is already started")
        self.inbox.open()
        self.scp.start()
        self._threads = [
            threading.Thread(target=self._schedule_loop, name="node-scheduler", daemon=True),
            threading.Thread(target=self._work_loop, name="node-worker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info("node started: results go to %s", self.destination)

    def stop(self, *, association_grace: float = 10.0, drain_timeout: float = 300.0) -> bool:
        """Stop as described in the module docstring.

        Args:
            association_grace: seconds the open associations may take to end before being aborted.
            drain_timeout: seconds the worker may take to finish its current study.

        Returns:
            Whether everything stopped cleanly (``False``: the worker was still busy after
            ``drain_timeout``; its study stays in the inbox and is processed again at the next start).
        """
        self.scp.stop_accepting()
        if not self.scp.wait_for_associations(association_grace):
            self.scp.abort_associations()
        self._stopping.set()
        clean = True
        deadline = time.monotonic() + drain_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("%s still busy after %.0f s; leaving it", thread.name, drain_timeout)
                clean = False
        logger.info(
            "node stopped: %d study(ies) left in the inbox for the next start", self.inbox.pending_count()
        )
        return clean

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every received study is finished; return whether that happened within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.inbox.pending_count():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # ---------------------------------------------------------------------------------------------
    # threads

    def purge(self) -> PurgeReport:
        """Apply the retention of the configuration now (:meth:`Inbox.purge`)."""
        return self.inbox.purge(
            keep_seconds=self.config.keep_days * SECONDS_PER_DAY,
            keep_failed_seconds=self.config.keep_failed_days * SECONDS_PER_DAY,
        )

    def _schedule_loop(self) -> None:
        next_purge = time.monotonic()
        while not self._stopping.wait(self.poll_interval):
            self.inbox.poll()
            if time.monotonic() >= next_purge:
                try:
                    self.purge()
                except Exception:  # the scheduler must go on queueing studies
                    logger.exception("retention: purge failed; trying again in %.0f s", self.purge_interval)
                next_purge = time.monotonic() + self.purge_interval

    def _work_loop(self) -> None:
        batching = isinstance(self.processor, BatchStudyProcessor)
        max_count = self.config.max_batch_studies if batching else 1
        while not self._stopping.is_set():
            study_uids = self.inbox.next_studies(max_count, timeout=self.poll_interval)
            if not study_uids:
                continue
            if self._stopping.is_set():
                for study_uid in study_uids:
                    self.inbox.release(study_uid)
                break
            try:
                outcomes = self._process(study_uids)
            except Exception:  # the worker must survive to serve the next studies
                logger.exception(
                    "unexpected error; %d study(ies) left in the inbox for the next start", len(study_uids)
                )
                continue
            for study_uid, outcome in outcomes.items():
                try:
                    finished = self._finish(study_uid, outcome)
                except Exception:  # idem
                    logger.exception(
                        "study %s: unexpected error; left in the inbox for the next start", study_uid
                    )
                    continue
                if finished is not None:
                    if finished.status == DONE and self.config.keep_days == 0:
                        self.inbox.delete_study_data(finished)
                    with self._finished_lock:
                        self.finished.append(finished)

    def _process(self, study_uids: list[str]) -> dict[str, list[Path] | Exception]:
        """Run the processor; return each study's result files (in its results folder) or its error."""
        outcomes: dict[str, list[Path] | Exception] = {}
        if len(study_uids) == 1:
            study_uid = study_uids[0]
            try:
                outcomes[study_uid] = [
                    Path(path)
                    for path in self.processor.process(
                        self.inbox.study_dir(study_uid), self.inbox.results_dir(study_uid)
                    )
                ]
            except Exception as exc:  # whatever the processor raises fails this study only
                logger.error("study %s: processing failed: %s", study_uid, exc, exc_info=True)
                outcomes[study_uid] = exc
            return outcomes
        assert isinstance(self.processor, BatchStudyProcessor)
        batch_dir = self.inbox.batch_dir()
        dirs = {self.inbox.study_dir(study_uid): study_uid for study_uid in study_uids}
        logger.info("processing %d studies in one batch", len(dirs))
        try:
            results = self.processor.process_many(list(dirs), batch_dir)
        except Exception as exc:  # fails the whole batch
            logger.error("processing of a batch of %d studies failed: %s", len(dirs), exc, exc_info=True)
            return dict.fromkeys(study_uids, exc)
        for study_dir, study_uid in dirs.items():
            outcome = results.get(study_dir)
            if outcome is None:
                outcome = RuntimeError("the processor returned nothing for this study")
            if not isinstance(outcome, Exception):
                outcome = self._adopt(study_uid, [Path(path) for path in outcome], batch_dir)
            outcomes[study_uid] = outcome
        return outcomes

    def _adopt(self, study_uid: str, files: list[Path], batch_dir: Path) -> list[Path] | Exception:
        """Move a study's result files from the batch folder into its own results folder."""
        results_dir = self.inbox.results_dir(study_uid)
        moved = []
        for path in files:
            if not path.is_file():
                return FileNotFoundError(f"the processor returned a result file that does not exist: {path}")
            try:
                relative = path.resolve().relative_to(batch_dir.resolve())
            except ValueError:
                relative = Path(path.name)
            target = results_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
            moved.append(target)
        return moved

    def _finish(self, study_uid: str, outcome: list[Path] | Exception) -> FinishedStudy | None:
        if isinstance(outcome, Exception):
            return self.inbox.finish(study_uid, FAILED, reason=f"processing failed: {outcome}")
        missing = [str(path) for path in outcome if not path.is_file()]
        if missing:
            return self.inbox.finish(
                study_uid, FAILED, reason=f"processing failed: result files that do not exist: {missing}"
            )
        if not outcome:
            logger.warning("study %s: no result to send (no image the model could use)", study_uid)
            return self.inbox.finish(study_uid, DONE, reason="no result: no image the model could use")
        started = time.monotonic()
        try:
            attempts = send_with_retries(
                self.destination,
                outcome,
                attempts=self.config.send_attempts,
                backoff_seconds=self.config.retry_backoff_seconds,
                stop=self._stopping,
            )
        except SendInterruptedError as exc:
            logger.warning("study %s: %s", study_uid, exc)
            self.inbox.release(study_uid)
            return None
        except SendError as exc:
            logger.error("study %s: sending failed: %s", study_uid, exc)
            return self.inbox.finish(study_uid, FAILED, reason=f"sending failed: {exc}", results=outcome)
        return self.inbox.finish(
            study_uid,
            DONE,
            results=outcome,
            details={
                "send_attempts": attempts,
                "send_seconds": round(time.monotonic() - started, 3),
                "destination": str(self.destination),
            },
        )
