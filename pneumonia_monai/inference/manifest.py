r"""The results manifest of a batch inference run, its atomic writers and the state a run resumes from.

Files of an output folder ``OUT`` (written by :func:`pneumonia_monai.inference.runner.run_inference`):

- ``results.csv`` and ``results.json``: one row per file found under the inputs, in the order the files
  were found, with the columns :func:`result_columns` gives (``prob_normal``, ``prob_bacterial`` and
  ``prob_viral`` are added for a three-class model). Probabilities are written with full precision
  (``repr`` of a float) so that the prediction can be checked against the threshold from the file;
  cells that do not apply are empty in the CSV and ``null`` in the JSON.
- ``studies.csv``: one row per Study Instance UID seen (:data:`STUDY_COLUMNS`).
- ``.state/journal.jsonl``: the resume journal (:class:`StateJournal`): one JSON line per finished
  file, appended and flushed as soon as the file is done. A line whose run fingerprint (weights and
  settings) differs from the current run's is ignored, and a torn last line (a killed run) is skipped.

No patient name, id, age, birth date or accession number is ever part of a row: only paths, UIDs, the view,
probabilities and reasons.

Paths that are not valid UTF-8 are written escaped (``\xNN`` per undecodable byte, ``\\`` per
backslash; :func:`pneumonia_monai.names.escape_name`, reversed by ``unescape_name``) in the CSV and the
JSON alike. A CSV cell that a spreadsheet would run as a formula (``=1+2``) is written with a leading
apostrophe (:func:`pneumonia_monai.atomic.csv_cell`), which :func:`read_results_csv` removes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from pneumonia_monai import atomic, checks
from pneumonia_monai.decision import NORMAL, label_at
from pneumonia_monai.dicom.intended_use import INTENDED_USE_VALUES, UNKNOWN
from pneumonia_monai.names import escape_name, printable

logger = logging.getLogger(__name__)

#: Row statuses.
OK = "ok"
SKIPPED = "skipped"
ERROR = "error"
STATUSES: tuple[str, ...] = (OK, SKIPPED, ERROR)
#: The prediction of an ``ok`` row is :func:`pneumonia_monai.decision.label_at` (``NORMAL`` imported above).

#: Columns of ``results.csv`` / ``results.json``, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "path",
    "status",
    "reason",
    "study_uid",
    "series_uid",
    "sop_uid",
    "view",
    "prob_pneumonia",
    "prediction",
    "intended_use",
    "threshold",
    "model_version",
    "operating_point",
)
#: Probability columns added for a three-class (normal / bacterial / viral) model.
SUBTYPE_COLUMNS: tuple[str, ...] = ("prob_normal", "prob_bacterial", "prob_viral")
#: Every column added for a three-class model: the probabilities and the ``subtype`` decision.
THREE_CLASS_COLUMNS: tuple[str, ...] = (*SUBTYPE_COLUMNS, "subtype")
#: Columns of ``studies.csv``, in order.
STUDY_COLUMNS: tuple[str, ...] = (
    "study_uid",
    "n_images",
    "prob_pneumonia",
    "prediction",
    "threshold",
    "model_version",
    "operating_point",
    "sr_path",
)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RESULTS_PARQUET = "results.parquet"
#: Rows per Parquet file: a run of more rows writes ``results.parquet/part-NNNNN.parquet`` shards.
PARQUET_SHARD_ROWS = 1_000_000
#: Rows per row group of ``results.parquet`` (what the writer holds as Python values at once).
_PARQUET_GROUP_ROWS = 10_000
#: Columns of ``results.parquet`` that are numbers (every other column is a string).
_PARQUET_FLOATS = frozenset({"prob_pneumonia", "threshold", *SUBTYPE_COLUMNS})
STUDIES_CSV = "studies.csv"
STATE_DIR = ".state"
JOURNAL_NAME = "journal.jsonl"
#: Version of the journal line format (2: rows carry ``operating_point``).
JOURNAL_VERSION = 2


def result_columns(three_class: bool = False) -> tuple[str, ...]:
    """Return the columns of ``results.csv`` for a two- or three-class model."""
    return RESULT_COLUMNS + THREE_CLASS_COLUMNS if three_class else RESULT_COLUMNS


def _check_probability(name: str, value: float | None, *, required: bool) -> float | None:
    if value is None:
        if required:
            raise ValueError(f"{name} is required for an ok row")
        return None
    return checks.probability(name, value)


@dataclass(frozen=True)
class ResultRow:
    """One row of the results manifest: one file and what became of it.

    Attributes:
        path: the file relative to its input root (forward slashes); a file input's own name.
        status: ``"ok"``, ``"skipped"`` or ``"error"``.
        reason: why (the selection rule that decided, or the error).
        study_uid, series_uid, sop_uid: the DICOM UIDs (empty for JPEG/PNG and unreadable files).
        view: View Position as read (empty for JPEG/PNG, or when the header has none).
        prob_pneumonia: probability of pneumonia (``ok`` rows only).
        prediction: ``"pneumonia"`` if ``prob_pneumonia >= threshold`` else ``"normal"`` (``ok`` rows only).
        threshold: the run's operating point.
        model_version: the run's model version.
        operating_point: where ``threshold`` comes from: ``bundle``, or the label of the site overlay
            (:mod:`pneumonia_monai.site_overlay`) the run used.
        prob_normal, prob_bacterial, prob_viral: class probabilities of a three-class model (``ok`` rows).
        intended_use: whether the patient is of the ages the model is intended for
            (:mod:`pneumonia_monai.dicom.intended_use`): ``yes``, ``no`` or ``unknown`` (JPEG/PNG, no
            usable age); an ``ok`` row given none is ``unknown``. Empty for rows not assessed (skipped
            for another reason, errors). The age itself is never part of a row.

    Raises:
        ValueError, TypeError: if the status is unknown, or an ``ok`` row's probabilities or prediction are
            missing, out of range or inconsistent with the threshold.
    """

    path: str
    status: str
    reason: str
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    view: str = ""
    prob_pneumonia: float | None = None
    prediction: str = ""
    threshold: float | None = None
    model_version: str = ""
    operating_point: str = ""
    prob_normal: float | None = None
    prob_bacterial: float | None = None
    prob_viral: float | None = None
    intended_use: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.intended_use not in ("", *INTENDED_USE_VALUES):
            raise ValueError(f"intended_use must be one of {INTENDED_USE_VALUES}, got {self.intended_use!r}")
        if self.status == OK and not self.intended_use:
            object.__setattr__(self, "intended_use", UNKNOWN)
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path must be a non-empty string, got {self.path!r}")
        ok = self.status == OK
        for name in ("prob_pneumonia", *SUBTYPE_COLUMNS):
            value = getattr(self, name)
            if not ok and value is not None:
                raise ValueError(f"{name} is only given for ok rows, got {value!r} for a {self.status} row")
            object.__setattr__(
                self, name, _check_probability(name, value, required=ok and name == "prob_pneumonia")
            )
        object.__setattr__(self, "threshold", _check_probability("threshold", self.threshold, required=ok))
        subtypes = [getattr(self, name) for name in SUBTYPE_COLUMNS]
        if any(v is not None for v in subtypes) and any(v is None for v in subtypes):
            raise ValueError("prob_normal, prob_bacterial and prob_viral must be given together")
        if ok:
            expected = label_at(self.prob_pneumonia, self.threshold)  # type: ignore[arg-type]
            if self.prediction != expected:
                raise ValueError(
                    f"prediction {self.prediction!r} contradicts prob_pneumonia {self.prob_pneumonia!r} "
                    f"and threshold {self.threshold!r} (expected {expected!r})"
                )
        elif self.prediction:
            raise ValueError(f"prediction is only given for ok rows, got {self.prediction!r}")

    @property
    def subtype(self) -> str | None:
        """``normal``, ``bacterial`` or ``viral`` for an ``ok`` three-class row, else ``None``.

        It follows ``prediction`` (made at the threshold on ``prob_pneumonia``): a film called normal is
        ``normal``; a film called pneumonia is its likelier subtype. So ``subtype`` never contradicts
        ``prediction``.
        """
        if self.status != OK or self.prob_bacterial is None or self.prob_viral is None:
            return None
        if self.prediction == NORMAL:
            return NORMAL
        return "bacterial" if self.prob_bacterial >= self.prob_viral else "viral"

    def _values(self) -> dict[str, Any]:
        return {**asdict(self), "subtype": self.subtype}

    def _written(self) -> dict[str, Any]:
        """The values as written: the path escaped losslessly, other text made printable (:mod:`names`)."""
        values = self._values()
        for name, value in values.items():
            if isinstance(value, str):
                values[name] = escape_name(value) if name == "path" else printable(value)
        return values

    def as_csv_row(self, columns: Sequence[str] = RESULT_COLUMNS) -> dict[str, str]:
        """Return the row as CSV cells (empty for ``None``; floats at full precision).

        The path is escaped by :func:`pneumonia_monai.names.escape_name` (names that are not UTF-8).
        """
        values = self._written()
        return {column: _cell(values[column]) for column in columns}

    def as_json(self, columns: Sequence[str] = RESULT_COLUMNS) -> dict[str, Any]:
        """Return the row as a JSON object (``None`` for cells that do not apply; the path as in the CSV)."""
        values = self._written()
        return {column: values[column] for column in columns}

    def to_state(self) -> dict[str, Any]:
        """Return every field, for the resume journal."""
        return asdict(self)

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> ResultRow:
        """Rebuild a row from :meth:`to_state` (unknown keys are an error).

        Raises:
            ValueError, TypeError: if ``data`` is not a valid row.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown result row field(s) {sorted(unknown)}")
        return cls(**dict(data))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass(frozen=True)
class StudyRow:
    """One row of ``studies.csv``.

    Attributes:
        study_uid: Study Instance UID.
        n_images: number of ``ok`` (frontal chest) images of the study.
        prob_pneumonia: maximum probability over those images (the rule of the DICOM SR); ``None`` when
            the study has no ``ok`` image.
        prediction: ``"pneumonia"`` if ``prob_pneumonia >= threshold`` else ``"normal"``; empty without
            images.
        threshold: the run's operating point.
        model_version: the run's model version.
        sr_path: the study's SR, relative to the output folder (empty when none was written).
        operating_point: where ``threshold`` comes from (as in the results rows).
    """

    study_uid: str
    n_images: int
    prob_pneumonia: float | None
    prediction: str
    threshold: float
    model_version: str
    sr_path: str = ""
    operating_point: str = ""

    def as_csv_row(self) -> dict[str, str]:
        """Return the row as CSV cells."""
        values = asdict(self)
        return {column: _cell(values[column]) for column in STUDY_COLUMNS}


def aggregate_studies(
    rows: Iterable[ResultRow], *, threshold: float, model_version: str, operating_point: str = ""
) -> list[StudyRow]:
    """Group rows by Study Instance UID, in order of first appearance.

    Every study seen gets a row, also one with no ``ok`` image (``n_images`` 0, no probability), so that a
    study the model could not read is visible. The study probability is the maximum over its ``ok`` images.
    """
    threshold = float(threshold)
    probs: dict[str, list[float]] = {}
    for row in rows:
        if not row.study_uid:
            continue
        bucket = probs.setdefault(row.study_uid, [])
        if row.status == OK and row.prob_pneumonia is not None:
            bucket.append(row.prob_pneumonia)
    studies = []
    for study_uid, values in probs.items():
        top = max(values) if values else None
        prediction = "" if top is None else label_at(top, threshold)
        studies.append(
            StudyRow(study_uid, len(values), top, prediction, threshold, model_version, "", operating_point)
        )
    return studies


# ---------------------------------------------------------------------------------------- writers


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> Path:
    """Write CSV rows to ``path`` atomically and durably (:mod:`pneumonia_monai.atomic`, fsync)."""
    return atomic.write_csv_atomic(path, columns, rows, fsync=True)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON (indent 1) to ``path`` atomically and durably (fsync)."""
    return atomic.write_json_atomic(path, data, indent=1, fsync=True)


def write_results(
    out_dir: str | Path, rows: Sequence[ResultRow], *, three_class: bool = False
) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` (the same rows) into ``out_dir``; return their paths."""
    out = Path(out_dir)
    columns = result_columns(three_class)
    csv_path = write_csv_atomic(out / RESULTS_CSV, columns, (row.as_csv_row(columns) for row in rows))
    json_path = write_json_atomic(out / RESULTS_JSON, [row.as_json(columns) for row in rows])
    return csv_path, json_path


def write_results_parquet(
    out_dir: str | Path,
    rows: Sequence[ResultRow],
    *,
    three_class: bool = False,
    shard_rows: int = PARQUET_SHARD_ROWS,
) -> list[Path]:
    """Write the rows of ``results.csv`` as ``results.parquet``; return the files written.

    The same columns and values as ``results.json`` (paths escaped alike; probabilities and the threshold
    as float64, empty cells null). Up to ``shard_rows`` rows make one file ``OUT/results.parquet``; more
    make the folder ``OUT/results.parquet/`` of ``part-NNNNN.parquet`` shards of ``shard_rows`` rows, in
    row order (``pyarrow.parquet.read_table`` and ``pandas.read_parquet`` read either). Each file is
    written atomically; the other form, left by an earlier run, is removed afterwards.

    Raises:
        ValueError: if ``shard_rows`` is not a positive int.
        ImportError: if pyarrow is not installed (``pip install .[ray]``).
    """
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    checks.positive_int("shard_rows", shard_rows)
    out = Path(out_dir)
    columns = result_columns(three_class)
    schema = pa.schema([(name, pa.float64() if name in _PARQUET_FLOATS else pa.string()) for name in columns])
    target = out / RESULTS_PARQUET
    chunks = [rows[start : start + shard_rows] for start in range(0, len(rows), shard_rows)] or [rows]
    sharded = len(chunks) > 1
    if sharded and target.is_file():
        target.unlink()
    written = []
    for number, chunk in enumerate(chunks):
        path = target / f"part-{number:05d}.parquet" if sharded else target
        if not sharded and target.is_dir():
            shutil.rmtree(target)
        with atomic.atomic_open(path, "wb", fsync=True) as handle, pq.ParquetWriter(handle, schema) as writer:
            for start in range(0, max(len(chunk), 1), _PARQUET_GROUP_ROWS):  # a row group at a time in memory
                records = [row.as_json(columns) for row in chunk[start : start + _PARQUET_GROUP_ROWS]]
                writer.write_table(pa.Table.from_pylist(records, schema=schema))
        written.append(path)
    if sharded:
        for stale in target.glob("part-*.parquet"):
            if stale not in written:
                stale.unlink()
    return written


def write_studies(out_dir: str | Path, studies: Sequence[StudyRow]) -> Path:
    """Write ``studies.csv`` into ``out_dir``; return its path."""
    return write_csv_atomic(Path(out_dir) / STUDIES_CSV, STUDY_COLUMNS, (s.as_csv_row() for s in studies))


def read_results_csv(path: str | Path) -> list[dict[str, str]]:
    """Read ``results.csv`` (or ``studies.csv``) back as a list of ``{column: cell}`` dicts.

    The apostrophe the writer puts before a cell a spreadsheet would run as a formula
    (:func:`pneumonia_monai.atomic.csv_cell`) is removed; paths stay escaped as written.
    """
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            {key: atomic.csv_value(value) for key, value in row.items()} for row in csv.DictReader(handle)
        ]


# ------------------------------------------------------------------------------------ resume state


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
