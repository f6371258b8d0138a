r"""The join of ``infer``'s results with labels: who is scored, on what, and why the rest is not.

:func:`join` reads a ``results.csv`` and a labels file, pairs them by the matching rule below and
accounts for every row of both; :class:`Joined` hands the scored films to
:func:`pneumonia_monai.evaluation.report.write_report` (``pneumonia-monai evaluate`` is its command line).

Inputs:

* the results: the ``results.csv`` of ``infer`` (``path``, ``status``, ``prob_pneumonia``,
  ``threshold``, ...; ``prob_normal``, ``prob_bacterial``, ``prob_viral`` for a three-class model).
  Only rows with status ``ok`` carry a prediction.
* the labels: a CSV with columns ``path,label`` (optional ``patient_id``, ``subtype``, ``split``), or a
  MONAI datalist JSON whose ``split`` list (default ``validation``) holds items with ``image`` and
  ``label`` (optional ``patient_id``, ``subtype``). A ``split`` column of a CSV is only used when
  a ``split`` is given.

Labels are names (``normal``, ``pneumonia``, ``bacterial``/``bacteria``, ``viral``/``virus``, any case)
or integers, read for the model's classes as follows (``subtype`` is the optional column or key)::

    label                      subtype            two-class model   three-class model
    0 / normal                 any                normal            normal
    pneumonia / integer >= 1   bacterial          pneumonia         bacterial
    pneumonia / integer >= 1   viral              pneumonia         viral
    pneumonia                  missing / unknown  pneumonia         (no usable label)
    1 / 2                      missing            pneumonia         bacterial / viral
    integer >= 1               unknown            pneumonia         (no usable label)
    bacterial / viral          any                pneumonia         bacterial / viral

A film whose label cannot be used for the model (a pneumonia film of unknown subtype, for a
three-class model) is left out and counted.

Matching rule, one prediction per label at most:

1. by path: a relative ``path`` of the results is taken relative to ``results_root`` (``evaluate --root``,
   default the current folder, where ``infer`` ran), a relative label path relative to ``labels_root``
   (``--labels-root``, default the labels file's folder, as MONAI reads datalists); the two match
   when the normalised absolute paths are equal.
2. by file name: a result and a label still unmatched match when their file name occurs exactly once
   among all results and exactly once among all labels.

Accounting: every label and every results row ends in exactly one of ``evaluated``,
``no prediction`` (not in the results, or its row is ``skipped`` / ``error``), ``unusable label``
(labels) or ``no label`` (results rows). The counts go to ``metrics.json`` under
``extra.accounting`` and every row not evaluated to ``unmatched.csv`` with its reason. ``evaluate``
exits with status 1 when any labelled film has no prediction: its metrics would silently describe a
different set than the one labelled.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumonia_monai.labels import LABEL_NAMES, LABEL_STRINGS, label_value

logger = logging.getLogger(__name__)


#: Columns ``results.csv`` must have.
RESULTS_REQUIRED: tuple[str, ...] = ("path", "status", "prob_pneumonia")
#: Probability columns of a three-class model, in class order.
SUBTYPE_PROB_COLUMNS: tuple[str, ...] = ("prob_normal", "prob_bacterial", "prob_viral")
#: Status of a results row that carries a prediction.
STATUS_OK = "ok"
#: File listing every label and results row that was not evaluated, with the reason.
UNMATCHED_FILE = "unmatched.csv"
UNMATCHED_COLUMNS: tuple[str, ...] = ("source", "path", "reason")
#: Default datalist list to evaluate.
DEFAULT_DATALIST_SPLIT = "validation"
#: Largest distance from 1 at which a row of three-class probabilities is renormalised (CSV rounding).
SUM_TOLERANCE = 1e-3


class InputError(ValueError):
    """An input file the command cannot work with (exit status 2)."""


@dataclass(frozen=True)
class Label:
    """One labelled film.

    Attributes:
        path: the path as written in the labels file.
        key: absolute, normalised path used for matching.
        label: class index for the model, or ``None`` when the label is not usable for it.
        patient_id: patient id, or ``""``.
    """

    path: str
    key: Path
    label: int | None
    patient_id: str


@dataclass(frozen=True)
class ResultRow:
    """One row of ``results.csv``.

    Attributes:
        path: the path as written.
        key: absolute, normalised path used for matching.
        status: ``ok``, ``skipped``, ``error``, ... (lower case).
        reason: the row's reason, if any.
        probs: class probabilities of an ``ok`` row (``None`` otherwise).
        threshold: the row's ``threshold`` value, if any.
        model_version: the row's ``model_version``, or ``""``.
        prob_pneumonia: an ``ok`` row's ``prob_pneumonia`` as written, the value ``infer`` compared with
            its threshold (``None`` otherwise).
    """

    path: str
    key: Path
    status: str
    reason: str
    probs: tuple[float, ...] | None
    threshold: float | None
    model_version: str = ""
    prob_pneumonia: float | None = None


def _key(path: str, base: Path) -> Path:
    """Absolute, normalised form of ``path`` (relative paths are taken relative to ``base``).

    Symbolic links are resolved where the files exist, so a link and its target match; the files
    need not exist.
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    return candidate.resolve()


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{what} is not finite: {text!r}")
    return value


def read_results(path: Path, *, root: Path) -> tuple[list[ResultRow], int]:
    """Read ``results.csv``; return its rows and the number of classes of the model.

    Raises:
        InputError: on missing columns, duplicate paths or malformed probabilities of an ``ok`` row.
        OSError: if the file cannot be read.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in RESULTS_REQUIRED if c not in columns]
        if missing:
            raise InputError(f"{path} lacks column(s) {missing} (has {columns})")
        raw = list(reader)
    num_classes = 3 if all(c in columns for c in SUBTYPE_PROB_COLUMNS) else 2
    prob_columns = SUBTYPE_PROB_COLUMNS if num_classes == 3 else ("prob_pneumonia",)
    rows: list[ResultRow] = []
    seen: dict[Path, int] = {}
    for line, record in enumerate(raw, start=2):
        file_path = (record.get("path") or "").strip()
        if not file_path:
            raise InputError(f"{path}:{line}: empty path")
        key = _key(file_path, root)
        if key in seen:
            raise InputError(f"{path}:{line}: {file_path} is listed twice (first on line {seen[key]})")
        seen[key] = line
        status = (record.get("status") or "").strip().lower()
        probs = prob_pneumonia = None
        if status == STATUS_OK:
            prob_pneumonia = _float(
                (record.get("prob_pneumonia") or "").strip(), f"{path}:{line}: prob_pneumonia"
            )
            if not 0.0 <= prob_pneumonia <= 1.0:
                raise InputError(f"{path}:{line}: prob_pneumonia outside [0, 1]: {prob_pneumonia}")
            values = [_float((record.get(c) or "").strip(), f"{path}:{line}: {c}") for c in prob_columns]
            if any(not 0.0 <= v <= 1.0 for v in values):
                raise InputError(f"{path}:{line}: probabilities outside [0, 1]: {values}")
            if num_classes == 3:
                total = sum(values)
                if abs(total - 1.0) > SUM_TOLERANCE:
                    raise InputError(f"{path}:{line}: {list(prob_columns)} sum to {total}, not 1")
                values = [v / total for v in values]
            probs = tuple(values)
        text = (record.get("threshold") or "").strip()
        threshold = _float(text, f"{path}:{line}: threshold") if text else None
        reason = (record.get("reason") or "").strip()
        version = (record.get("model_version") or "").strip()
        rows.append(ResultRow(file_path, key, status, reason, probs, threshold, version, prob_pneumonia))
    return rows, num_classes


def class_index(value: Any, subtype: str, num_classes: int) -> int | None:
    """Return the model class of a label (see the table in the module documentation).

    Args:
        value: the label: a name or an integer (or a string of one).
        subtype: the ``subtype`` field, or ``""``.
        num_classes: 2 or 3.

    Returns:
        The class index, or ``None`` when the label is not usable for a three-class model.

    Raises:
        InputError: on an unknown name or an integer outside 0..2.
    """
    sub = LABEL_NAMES.get(str(subtype).strip().lower(), "")
    if isinstance(value, bool):
        raise InputError(f"label {value!r} is neither a class name nor an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if isinstance(value, (int, np.integer)) or text.lstrip("-").isdigit():
        number = int(text)
        if not 0 <= number <= 2:
            raise InputError(f"integer label {number} is outside 0..2")
        kind = "normal" if number == 0 else (sub if sub in ("bacterial", "viral") else "pneumonia")
        if kind == "pneumonia" and not subtype.strip():
            kind = ("pneumonia", "bacterial", "viral")[number] if num_classes == 3 else "pneumonia"
    else:
        name = LABEL_NAMES.get(text.lower())
        if name is None:
            raise InputError(f"unknown label {text!r}; expected one of {sorted(set(LABEL_NAMES))} or 0, 1, 2")
        kind = name
        if kind == "pneumonia" and sub in ("bacterial", "viral"):
            kind = sub
    label, subtype_of_kind = LABEL_STRINGS[kind]
    return label_value(label, subtype_of_kind, "binary" if num_classes == 2 else "subtype")


def _label_items(path: Path, split: str | None) -> tuple[list[Mapping[str, Any]], str, str]:
    """Raw label items of a CSV or datalist, with the name of their path field and of the split."""
    if path.suffix.lower() == ".json":
        with path.open(encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} is not valid JSON: {exc}") from None
        key = split or DEFAULT_DATALIST_SPLIT
        if not isinstance(data, Mapping) or not isinstance(data.get(key), list):
            found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise InputError(f"{path} has no {key!r} list of items (it has {found})")
        items = data[key]
        if not all(isinstance(item, Mapping) and "image" in item and "label" in item for item in items):
            raise InputError(f"every item of {path}[{key!r}] needs 'image' and 'label'")
        return items, "image", key
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns or "label" not in columns:
            raise InputError(f"{path} needs columns 'path' and 'label' (has {columns})")
        rows: list[Mapping[str, Any]] = list(reader)
    if split is not None:
        if "split" in columns:
            rows = [row for row in rows if (row.get("split") or "").strip() == split]
        else:
            logger.warning("%s has no 'split' column: --split %s only names the report", path, split)
    return rows, "path", split or path.stem


def read_labels(path: Path, *, num_classes: int, split: str | None, root: Path) -> tuple[list[Label], str]:
    """Read the labels of ``split`` from a labels CSV or a datalist JSON.

    Returns:
        The labels and the name of the evaluated set.

    Raises:
        InputError: on a malformed file, an unknown label or a path listed twice.
        OSError: if the file cannot be read.
    """
    items, path_field, split_name = _label_items(path, split)
    labels: list[Label] = []
    seen: set[Path] = set()
    for index, item in enumerate(items):
        file_path = str(item.get(path_field) or "").strip()
        if not file_path:
            raise InputError(f"{path}: item {index} has an empty {path_field}")
        key = _key(file_path, root)
        if key in seen:
            raise InputError(f"{path}: {file_path} is labelled twice")
        seen.add(key)
        try:
            label = class_index(item.get("label", ""), str(item.get("subtype") or ""), num_classes)
        except InputError as exc:
            raise InputError(f"{path}: {file_path}: {exc}") from None
        labels.append(Label(file_path, key, label, str(item.get("patient_id") or "").strip()))
    return labels, split_name


def match(results: Sequence[ResultRow], labels: Sequence[Label]) -> tuple[dict[int, int], Counter[str]]:
    """Pair labels with results rows by the module's matching rule.

    Returns:
        ``{label index: results index}`` and the number of pairs made by each rule (``"path"``,
        ``"file_name"``).
    """
    by_key = {row.key: i for i, row in enumerate(results)}
    pairs: dict[int, int] = {}
    for j, label in enumerate(labels):
        if label.key in by_key:
            pairs[j] = by_key[label.key]
    rules: Counter[str] = Counter(path=len(pairs))
    result_names = Counter(row.key.name for row in results)
    label_names = Counter(label.key.name for label in labels)
    unique_results = {row.key.name: i for i, row in enumerate(results) if result_names[row.key.name] == 1}
    taken = set(pairs.values())
    for j, label in enumerate(labels):
        name = label.key.name
        if j in pairs or label_names[name] != 1 or name not in unique_results:
            continue
        i = unique_results[name]
        if i not in taken:
            pairs[j] = i
            taken.add(i)
            rules["file_name"] += 1
    return pairs, rules


def threshold_from_results(rows: Iterable[ResultRow]) -> float:
    """The one threshold the ``ok`` rows were written at.

    Raises:
        InputError: if they hold none, several, or one outside [0, 1].
    """
    values = sorted({row.threshold for row in rows if row.status == STATUS_OK and row.threshold is not None})
    if not values:
        raise InputError("the results have no threshold; pass --threshold or --bundle")
    if len(values) > 1:
        raise InputError(f"the results hold {len(values)} thresholds {values}; pass --threshold or --bundle")
    if not 0.0 <= values[0] <= 1.0:
        raise InputError(f"the results' threshold {values[0]} is outside [0, 1]")
    return values[0]


def model_version(rows: Sequence[ResultRow]) -> str:
    """The one model version of the scored rows.

    Raises:
        InputError: if the rows name none or several (a threshold belongs to one model).
    """
    versions = sorted({row.model_version for row in rows})
    if versions == [""] or not versions:
        raise InputError("the results have no model_version: a site threshold must name its model")
    if len(versions) > 1:
        raise InputError(f"the scored results come from {len(versions)} model versions {versions}")
    return versions[0]


def account(
    results: Sequence[ResultRow], labels: Sequence[Label], pairs: Mapping[int, int]
) -> tuple[list[int], dict[str, Any], list[dict[str, str]]]:
    """Decide the fate of every label and row; return evaluated label indices, counts and unmatched rows."""
    evaluated: list[int] = []
    unmatched: list[dict[str, str]] = []
    no_prediction: Counter[str] = Counter()
    unusable = 0
    for j, label in enumerate(labels):
        row = results[pairs[j]] if j in pairs else None
        if label.label is None:
            unusable += 1
            unmatched.append(
                {
                    "source": "labels",
                    "path": label.path,
                    "reason": "unusable label: pneumonia of unknown subtype",
                }
            )
        elif row is None:
            no_prediction["not_in_results"] += 1
            unmatched.append(
                {"source": "labels", "path": label.path, "reason": "no prediction: not in the results"}
            )
        elif row.status != STATUS_OK:
            no_prediction[row.status or "no_status"] += 1
            why = f"no prediction: {row.status or 'no status'}" + (f" ({row.reason})" if row.reason else "")
            unmatched.append({"source": "labels", "path": label.path, "reason": why})
        else:
            evaluated.append(j)
    matched_rows = set(pairs.values())
    no_label: Counter[str] = Counter()
    for i, row in enumerate(results):
        if i not in matched_rows:
            no_label[row.status or "no_status"] += 1
            unmatched.append(
                {"source": "results", "path": row.path, "reason": f"no label ({row.status or 'no status'})"}
            )
    accounting = {
        "results_rows": len(results),
        "results_by_status": dict(sorted(Counter(row.status or "no_status" for row in results).items())),
        "labels": len(labels),
        "evaluated": len(evaluated),
        "labelled_without_prediction": sum(no_prediction.values()),
        "labelled_without_prediction_by_cause": dict(sorted(no_prediction.items())),
        "unusable_labels": unusable,
        "results_without_label": sum(no_label.values()),
        "results_without_label_by_status": dict(sorted(no_label.items())),
    }
    return evaluated, accounting, unmatched


@dataclass(frozen=True)
class Joined:
    """Results joined to labels: every row of both accounted for, and the films to score.

    Attributes:
        results: the rows of ``results.csv``.
        labels: the labels of the evaluated set.
        num_classes: 2 or 3, from the results' columns.
        split_name: the name of the evaluated set.
        pairs: ``{label index: results index}``.
        evaluated: indices of the labels scored (usable label, ``ok`` prediction), in label order.
        accounting: the counts of :func:`account`, with ``matched_by`` (pairs per matching rule).
        unmatched: one ``{"source", "path", "reason"}`` row (:data:`UNMATCHED_COLUMNS`) per label or
            results row not scored.
    """

    results: list[ResultRow]
    labels: list[Label]
    num_classes: int
    split_name: str
    pairs: dict[int, int]
    evaluated: list[int]
    accounting: dict[str, Any]
    unmatched: list[dict[str, str]]

    @property
    def scored_rows(self) -> list[ResultRow]:
        """The results rows of the evaluated films, in label order."""
        return [self.results[self.pairs[j]] for j in self.evaluated]

    @property
    def missing(self) -> int:
        """The number of labelled films without a prediction."""
        return int(self.accounting["labelled_without_prediction"])

    def y_true(self) -> np.ndarray:
        """``(n,)`` class indices of the evaluated films."""
        return np.array([self.labels[j].label for j in self.evaluated], dtype=np.int64)

    def probs(self) -> np.ndarray:
        """Class probabilities of the evaluated films: ``(n, 3)``, or ``(n,)`` p(pneumonia) of two classes."""
        probs = np.array([row.probs for row in self.scored_rows], dtype=np.float64)
        return probs[:, 0] if self.num_classes == 2 else probs

    def written_prob_pneumonia(self) -> np.ndarray:
        """``(n,)`` ``prob_pneumonia`` of the evaluated films as written.

        The value ``infer`` compared with its threshold (for three classes, ``1 - p(normal)`` before any
        renormalising of the CSV's values).
        """
        return np.array([row.prob_pneumonia for row in self.scored_rows], dtype=np.float64)

    def groups(self) -> np.ndarray | None:
        """Patient ids of the evaluated films, or ``None`` unless every one has an id.

        Logs a warning when only some have one (the intervals then resample films).
        """
        patient_ids = [self.labels[j].patient_id for j in self.evaluated]
        if all(patient_ids):
            return np.array(patient_ids)
        if any(patient_ids):
            logger.warning("only some labels have a patient_id: intervals resample films, not patients")
        return None

    def written_thresholds(self) -> set[float]:
        """The thresholds the ``ok`` rows were written at."""
        return {
            row.threshold for row in self.results if row.status == STATUS_OK and row.threshold is not None
        }


def join(
    results_path: Path,
    labels_path: Path,
    *,
    split: str | None = None,
    results_root: Path,
    labels_root: Path,
) -> Joined:
    """Read ``results.csv`` and a labels file, pair them and account for every row of both.

    Args:
        results_path: the ``results.csv`` of ``infer``.
        labels_path: a labels CSV or a MONAI datalist JSON.
        split: the datalist list to read (default :data:`DEFAULT_DATALIST_SPLIT`), or for a CSV the
            ``split`` value of the rows kept.
        results_root: the folder relative paths of the results are relative to.
        labels_root: the folder relative paths of the labels are relative to.

    Raises:
        InputError: on a malformed results or labels file.
        OSError: if a file cannot be read.
    """
    results, num_classes = read_results(results_path, root=results_root)
    labels, split_name = read_labels(labels_path, num_classes=num_classes, split=split, root=labels_root)
    pairs, rules = match(results, labels)
    evaluated, accounting, unmatched = account(results, labels, pairs)
    accounting["matched_by"] = {"path": rules["path"], "file_name": rules["file_name"]}
    return Joined(results, labels, num_classes, split_name, pairs, evaluated, accounting, unmatched)


def log_accounting(joined: Joined, unmatched_path: Path) -> None:
    """Log what was matched and scored, and warn about what was not (``unmatched_path`` lists it)."""
    accounting = joined.accounting
    logger.info(
        "results: %d row(s) %s; labels: %d; matched by path %d, by file name %d; evaluated %d",
        len(joined.results),
        accounting["results_by_status"],
        len(joined.labels),
        accounting["matched_by"]["path"],
        accounting["matched_by"]["file_name"],
        len(joined.evaluated),
    )
    if accounting["results_without_label"]:
        logger.warning(
            "%d results row(s) have no label %s and are not scored",
            accounting["results_without_label"],
            accounting["results_without_label_by_status"],
        )
    if accounting["unusable_labels"]:
        logger.warning(
            "%d film(s) have a label the %d-class model cannot be scored on",
            accounting["unusable_labels"],
            joined.num_classes,
        )
    if joined.missing:
        logger.error(
            "%d labelled image(s) have no prediction %s: see %s",
            joined.missing,
            accounting["labelled_without_prediction_by_cause"],
            unmatched_path,
        )
