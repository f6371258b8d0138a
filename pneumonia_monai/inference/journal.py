"""The resume journal of a batch inference run (``OUT/.state/journal.jsonl``) and what a run resumes from.

One JSON line per finished file (:class:`StateJournal`), appended and flushed as soon as the file is done,
keyed by :func:`file_key` (the file's resolved path, size and modification time) and stamped with the
run's fingerprint (:func:`run_fingerprint`: the bundle's weights and settings and the selection rules).
A line of another fingerprint is ignored, and a torn last line (a killed run) is skipped. Which entries
stand for the current run is :func:`reusable`; the digest that tells whether a study's results changed
since its SR or FHIR Bundle was written is :func:`study_digest`, and those records are read with
:func:`read_state_record`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from pneumonia_monai import atomic
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.inference.manifest import ERROR, OK, ResultRow

logger = logging.getLogger(__name__)

#: The journal's file name in ``OUT/.state/``.
JOURNAL_NAME = "journal.jsonl"
#: Version of the journal line format (2: rows carry ``operating_point``).
JOURNAL_VERSION = 2


def file_key(path: str | Path) -> str:
    """Identify a file's current content: SHA-256 of its resolved path, size and modification time.

    A file replaced or touched after it was processed gets a new key, so its old result is not reused.

    Raises:
        OSError: if the file cannot be examined.
    """
    resolved = Path(os.path.realpath(path))  # a link loop raises OSError in stat, not RuntimeError here
    stat = resolved.stat()
    text = f"{resolved.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class StateEntry:
    """What the journal remembers of one finished file.

    Attributes:
        row: its result row.
        heatmaps: whether its heatmap outputs were written.
        masks: whether its mask outputs (NIfTI files, and the SEG of a DICOM film) were all written.
    """

    row: ResultRow
    heatmaps: bool = False
    masks: bool = False


class StateJournal:
    """Append-only journal of finished files, for resuming a run.

    Each line is ``{"v": 2, "fingerprint": ..., "key": ..., "heatmaps": bool, "masks": bool, "row": {...}}``
    (``masks`` may be absent: false); the last
    line of a key wins. Lines are flushed to the operating system as they are written, so a killed process
    loses at most the line it was writing, which :meth:`load` skips. Not safe for two writers: the runner
    holds ``OUT/.lock`` while it writes.

    Args:
        path: the journal file (its folder is created).
        fingerprint: the run's fingerprint; lines of other fingerprints are ignored by :meth:`load`.
    """

    def __init__(self, path: str | Path, fingerprint: str) -> None:
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._handle: IO[str] | None = None

    def load(self) -> dict[str, StateEntry]:
        """Return the entries of this fingerprint, by file key; unreadable lines are skipped (logged)."""
        entries: dict[str, StateEntry] = {}
        if not self.path.is_file():
            return entries
        skipped = 0
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    if data.get("v") != JOURNAL_VERSION or data.get("fingerprint") != self.fingerprint:
                        continue
                    entries[str(data["key"])] = StateEntry(
                        ResultRow.from_state(data["row"]), bool(data["heatmaps"]), bool(data.get("masks"))
                    )
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    skipped += 1
                    logger.debug("%s line %d skipped: %s", self.path, number, type(exc).__name__)
        if skipped:
            logger.warning("resume journal: %d unreadable line(s) skipped (an interrupted run)", skipped)
        return entries

    def _line(self, key: str, entry: StateEntry) -> str:
        data = {
            "v": JOURNAL_VERSION,
            "fingerprint": self.fingerprint,
            "key": key,
            "heatmaps": entry.heatmaps,
            "masks": entry.masks,
            "row": entry.row.to_state(),
        }
        return json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n"

    def open(self) -> None:
        """Open the journal for appending (a torn last line is closed off first)."""
        if self._handle is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = False
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"
        self._handle = self.path.open("a", encoding="utf-8")
        if torn:
            self._handle.write("\n")
            self._handle.flush()

    def record(self, key: str, entry: StateEntry) -> None:
        """Append one finished file and flush it."""
        if self._handle is None:
            self.open()
        handle = self._handle
        if handle is None:  # pragma: no cover - open() sets it or raises
            raise RuntimeError(f"{self.path} is not open")
        handle.write(self._line(key, entry))
        handle.flush()

    def close(self) -> None:
        """Flush to disk and close the journal."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def compact(self, entries: Iterable[tuple[str, StateEntry]]) -> None:
        """Replace the journal (atomically) by exactly ``entries``: the files of the run that just ended."""
        self.close()
        with atomic.atomic_open(self.path, "w", fsync=True) as handle:
            for key, entry in entries:
                handle.write(self._line(key, entry))

    def __enter__(self) -> StateJournal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_fingerprint(bundle_fingerprint: str, rules: SelectionRules) -> str:
    """The fingerprint of a run: its bundle's (weights and settings) and its selection rules'."""
    identity = asdict(rules)
    identity.pop("source", None)
    text = bundle_fingerprint + json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def reusable(entry: StateEntry | None, heatmaps: bool) -> bool:
    """Whether a journal entry can stand for this run: not an error, and with heatmaps when asked for."""
    if entry is None or entry.row.status == ERROR:
        return False
    return not (heatmaps and entry.row.status == OK and not entry.heatmaps)


def study_digest(fingerprint: str, rows: Sequence[ResultRow]) -> str:
    """A digest of a study's results (what its SR and FHIR Bundle are built from) under ``fingerprint``."""
    data = [
        (
            row.sop_uid,
            row.prob_pneumonia,
            row.prediction,
            row.prob_normal,
            row.prob_bacterial,
            row.prob_viral,
            row.intended_use,
        )
        for row in rows
    ]
    return hashlib.sha256((fingerprint + json.dumps(data)).encode()).hexdigest()


def read_state_record(path: Path) -> dict[str, Any]:
    """Read a JSON object of ``OUT/.state/`` (``sr.json``, ``fhir.json``); empty if missing or unreadable."""
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("%s unreadable (%s): its outputs are rebuilt", path, type(exc).__name__)
        return {}
    return data if isinstance(data, dict) else {}
