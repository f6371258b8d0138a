r"""The results manifest of a batch inference run and its writers.

Files of an output folder ``OUT`` (written by :func:`pneumonia_monai.inference.runner.run_inference`):

- ``results.csv`` and ``results.json``: one row per file found under the inputs, in the order the files
  were found, with the columns :func:`result_columns` gives (``prob_normal``, ``prob_bacterial`` and
  ``prob_viral`` are added for a three-class model). Probabilities are written with full precision
  (``repr`` of a float) so that the prediction can be checked against the threshold from the file;
  cells that do not apply are empty in the CSV and ``null`` in the JSON.
- ``studies.csv``: one row per Study Instance UID seen (:data:`STUDY_COLUMNS`).
- ``.state/journal.jsonl``: the resume journal (:mod:`pneumonia_monai.inference.journal`).

No patient name, id, age, birth date or accession number is ever part of a row: only paths, UIDs, the view,
probabilities and reasons.

Paths that are not valid UTF-8 are written escaped (``\xNN`` per undecodable byte, ``\\`` per
backslash; :func:`pneumonia_monai.names.escape_name`, reversed by ``unescape_name``) in the CSV and the
JSON alike. A CSV cell that a spreadsheet would run as a formula (``=1+2``) is written with a leading
apostrophe (:func:`pneumonia_monai.atomic.csv_cell`), which :func:`read_results_csv` removes.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

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
