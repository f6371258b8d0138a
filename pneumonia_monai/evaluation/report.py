"""The evaluation report: ``metrics.json`` with bootstrap intervals, and its figures.

``metrics.json`` holds no time stamp or absolute path, so the same predictions, labels and seed
give the same file byte for byte. Undefined values (``nan``) are written as ``null`` to keep the file
strict JSON. Its top-level keys are :data:`REPORT_KEYS`:

``schema_version``
    :data:`SCHEMA_VERSION`.
``pneumonia_monai_version``
    the package version that wrote it.
``split``
    the name of the evaluated set.
``task``
    ``"binary"`` (normal / pneumonia) or ``"multiclass"`` (normal / bacterial / viral).
``class_names``, ``n``, ``class_counts``, ``n_groups``
    the classes, the number of films, films per class, and the number of patients (``null``
    without patient ids).
``threshold``
    ``{"value", "rule", "params", "applied_as"}``: the operating threshold of the pneumonia
    probability and how it was chosen.
``bootstrap``
    how the intervals were computed (resamples, confidence, seed, resampling unit).
``binary``
    :func:`~pneumonia_monai.evaluation.metrics.binary_metrics` of pneumonia vs normal (for a
    three-class model, of ``1 - p(normal)`` against bacterial-or-viral).
``multiclass``
    :func:`~pneumonia_monai.evaluation.metrics.multiclass_metrics` without its ``binary`` part, or
    ``null`` for a two-class model.
``confidence_intervals``
    ``{"binary": {metric: {"estimate", "low", "high"}}, "multiclass": {...} | null}`` for
    :data:`BINARY_CI_METRICS` and :data:`MULTICLASS_CI_METRICS`; ``null`` when the bootstrap is off.
``figures``
    figure name -> file name in the report folder.
``extra``
    whatever the caller passed (accounting, provenance), or ``{}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumonia_monai import __version__, checks
from pneumonia_monai.atomic import write_json_atomic
from pneumonia_monai.decision import called_pneumonia, pneumonia_probabilities
from pneumonia_monai.evaluation.metrics import (
    binary_metrics,
    bootstrap_ci,
    macro_f1,
    multiclass_accuracy,
    multiclass_metrics,
    roc_auc,
    threshold_metric,
    validate_labels,
    validate_probs,
    validate_threshold,
)
from pneumonia_monai.evaluation.plots import (
    plot_calibration,
    plot_confusion_matrix,
    plot_precision_recall,
    plot_roc,
)
from pneumonia_monai.evaluation.threshold import ThresholdChoice

logger = logging.getLogger(__name__)

#: Version of the ``metrics.json`` layout; bumped when a key changes meaning or disappears.
SCHEMA_VERSION = 1
#: File name of the metrics.
METRICS_FILE = "metrics.json"
#: Figure name -> file name, always written.
FIGURE_FILES: dict[str, str] = {
    "roc": "roc.png",
    "pr": "pr.png",
    "calibration": "calibration.png",
    "confusion_matrix": "confusion_matrix.png",
}
#: File name of the Grad-CAM montage, written when images and maps are given.
MONTAGE_FILE = "gradcam_montage.png"
#: Top-level keys of ``metrics.json``, in order (the file's contract).
REPORT_KEYS: tuple[str, ...] = (
    "schema_version",
    "pneumonia_monai_version",
    "split",
    "task",
    "class_names",
    "n",
    "class_counts",
    "n_groups",
    "threshold",
    "bootstrap",
    "binary",
    "multiclass",
    "confidence_intervals",
    "figures",
    "extra",
)
#: Binary metrics given a bootstrap interval.
BINARY_CI_METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "sensitivity", "specificity")
#: Three-class metrics given a bootstrap interval.
MULTICLASS_CI_METRICS: tuple[str, ...] = ("accuracy", "macro_f1")
#: Montage categories, in drawing order, and the most tiles of each.
MONTAGE_CATEGORIES: tuple[str, ...] = ("TP", "FP", "TN", "FN")
MONTAGE_PER_CATEGORY = 4
#: Fewest resampling units (patients, or films without patient ids) of each class (normal, pneumonia)
#: for bootstrap intervals that mean something: with fewer, percentile intervals collapse (six films
#: that the model separates give ROC AUC [1.000, 1.000] in every resample).
MIN_BOOTSTRAP_UNITS_PER_CLASS = 10


def to_json_ready(value: Any, *, where: str = "value") -> Any:
    """Return ``value`` with numpy scalars and arrays made plain and ``nan``/``inf`` made ``None``.

    Raises:
        TypeError: for an object JSON cannot hold (naming where it is).
    """
    if isinstance(value, Mapping):
        return {str(key): to_json_ready(item, where=f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return to_json_ready(value.tolist(), where=where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{where} is a {type(value).__name__}, which metrics.json cannot hold")


def _threshold_info(threshold: float | ThresholdChoice) -> dict[str, Any]:
    if isinstance(threshold, ThresholdChoice):
        value, rule, params = threshold.threshold, threshold.rule, dict(threshold.params)
    else:
        value, rule, params = threshold, "fixed", {}
    return {
        "value": validate_threshold(value),
        "rule": rule,
        "params": params,
        "applied_as": "prob_pneumonia >= value -> pneumonia",
    }


def _interval(
    y: np.ndarray,
    p: np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    estimate: float,
    **kwargs: Any,
) -> dict[str, float]:
    low, high = bootstrap_ci(y, p, fn, **kwargs)
    return {"estimate": estimate, "low": low, "high": high}


def _unit_2d(array: Any, name: str) -> np.ndarray:
    """Squeeze ``array`` to 2-D and scale it to [0, 1] (a constant array becomes zeros)."""
    arr = np.squeeze(np.asarray(array, dtype=np.float64))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (H, W) or (1, H, W), got shape {np.shape(array)}")
    low, high = float(arr.min()), float(arr.max())
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


def bootstrap_sample_warning(
    y_true: np.ndarray, groups: np.ndarray | None, minimum: int = MIN_BOOTSTRAP_UNITS_PER_CLASS
) -> str | None:
    """Why bootstrap intervals on these films would mislead, or ``None`` when they have enough units.

    The units are what :func:`~pneumonia_monai.evaluation.metrics.bootstrap_ci` resamples: patients when
    ``groups`` is given, else films; counted per binary class (a patient with films of both classes
    counts in both).
    """
    y_bin = np.asarray(y_true) > 0
    units = np.arange(y_bin.size) if groups is None else np.asarray(groups)
    unit_name = "film" if groups is None else "patient"
    counts = {
        "normal": int(np.unique(units[~y_bin]).size),
        "pneumonia": int(np.unique(units[y_bin]).size),
    }
    if min(counts.values()) >= minimum:
        return None
    return (
        f"bootstrap intervals on {counts['normal']} normal and {counts['pneumonia']} pneumonia "
        f"{unit_name}(s): fewer than {minimum} of a class, too few to resample; the intervals are not "
        f"estimable (they can collapse to the point estimate, e.g. [1.000, 1.000])"
    )


def select_montage_cases(
    y_true: np.ndarray, prob: np.ndarray, threshold: float, per_category: int = MONTAGE_PER_CATEGORY
) -> list[tuple[str, int]]:
    """Pick up to ``per_category`` films of each of TP, FP, TN, FN, the most confident first.

    Films called pneumonia (TP, FP) are ranked by decreasing probability, films called normal
    (TN, FN) by increasing probability; equal probabilities keep the input order.

    Returns:
        ``(category, index)`` pairs in the order of :data:`MONTAGE_CATEGORIES`.
    """
    called = called_pneumonia(prob, threshold)
    masks = {
        "TP": called & (y_true == 1),
        "FP": called & (y_true == 0),
        "TN": ~called & (y_true == 0),
        "FN": ~called & (y_true == 1),
    }
    picked: list[tuple[str, int]] = []
    for category in MONTAGE_CATEGORIES:
        index = np.flatnonzero(masks[category])
        key = -prob[index] if category in ("TP", "FP") else prob[index]
        ranked = index[np.argsort(key, kind="stable")][:per_category]
        picked += [(category, int(i)) for i in ranked]
    return picked


def _write_montage(
    out_dir: Path,
    y_bin: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    images: Any,
    cams: Any,
    films: Sequence[tuple[str, Sequence[float]]] | None = None,
) -> Path | None:
    n_cams = y_bin.size if callable(cams) else len(cams)
    if len(images) != y_bin.size or n_cams != y_bin.size:
        raise ValueError(
            f"images and cams must have one entry per film ({y_bin.size}), got {len(images)} and {n_cams}"
        )
    cases = select_montage_cases(y_bin, prob, threshold)
    if not cases:
        return None
    # imported here: the heat-map module pulls in torch and MONAI, which the metrics do not need
    from pneumonia_monai.transforms.io import load_film
    from pneumonia_monai.visualize.montage import montage
    from pneumonia_monai.visualize.overlay import film_heatmap, overlay

    def tile(category: str, i: int) -> np.ndarray:
        cam = _unit_2d(cams(i) if callable(cams) else cams[i], f"cams[{i}]")
        if films is None:
            return overlay(_unit_2d(images[i], f"images[{i}]"), cam)
        path, box = films[i]  # the whole film at its geometry, as inference draws it
        return film_heatmap(load_film(path)[0], cam, box, caption=f"{category} p(pneumonia) {prob[i]:.2f}")

    tiles = [(tile(category, i), f"{category} p={prob[i]:.2f}") for category, i in cases]
    path = out_dir / MONTAGE_FILE
    montage(tiles, path, columns=4)
    return path


def write_report(
    out_dir: str | Path,
    y_true: Any,
    probs: Any,
    *,
    class_names: Sequence[str],
    threshold: float | ThresholdChoice,
    groups: Any | None = None,
    images: Any | None = None,
    cams: Any | None = None,
    films: Sequence[tuple[str, Sequence[float]]] | None = None,
    split_name: str = "validation",
    extra: Mapping[str, Any] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Score predictions and write ``metrics.json`` and the figures to ``out_dir``.

    Args:
        out_dir: report folder (created if missing).
        y_true: ``(n,)`` labels, indices into ``class_names``.
        probs: ``(n, k)`` softmax probabilities, or for two classes ``(n,)`` probabilities of pneumonia.
        class_names: the ``k`` class names in label order; the first must be ``normal``.
        threshold: operating threshold of the pneumonia probability, or a
            :class:`~pneumonia_monai.evaluation.threshold.ThresholdChoice` recording its rule.
        groups: ``(n,)`` patient ids; intervals then resample patients (cluster bootstrap).
        images: ``n`` films (``(H, W)`` or ``(1, H, W)``) for the Grad-CAM montage.
        films: per film, ``(path, crop)`` (the crop the network saw, as fractions of the film): the
            montage then lays each map over its whole film, as inference does.
        cams: ``n`` class-activation maps of the same spatial shape as ``images``, or a callable that
            returns the map of film ``i``, so that maps are computed only for the films the montage shows.
        split_name: name of the evaluated set.
        extra: more JSON-ready content for the ``extra`` key.
        n_resamples: bootstrap resamples; ``0`` writes no intervals.
        confidence: coverage of the intervals.
        seed: bootstrap seed.

    Returns:
        The content of ``metrics.json`` (``nan`` as ``None``).

    Raises:
        ValueError: on malformed or mismatched input, or ``images`` without ``cams`` (or the reverse).
        TypeError: if ``extra`` holds something JSON cannot.
    """
    names = [str(name) for name in class_names]
    y, p, groups = _checked_inputs(y_true, probs, names, groups)
    checks.non_negative_int("n_resamples", n_resamples)
    if (images is None) != (cams is None):
        raise ValueError("images and cams must be given together")
    extra_ready = to_json_ready(dict(extra or {}), where="extra")
    threshold_info = _threshold_info(threshold)
    t = threshold_info["value"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    y_bin = (y > 0).astype(np.int64)
    prob_pneumonia = pneumonia_probabilities(p, names)
    binary = binary_metrics(y_bin, prob_pneumonia, t)
    multi = None
    if len(names) > 2:
        multi = multiclass_metrics(y, p, names, threshold=t)
        multi.pop("binary")

    interval_warning = bootstrap_sample_warning(y, groups) if n_resamples > 0 else None
    if interval_warning is not None:
        logger.warning("%s: %s", split_name, interval_warning)
    bootstrap = {"n_resamples": int(n_resamples), "confidence": confidence, "seed": seed, "groups": groups}
    intervals = _intervals(y, p, prob_pneumonia, t, binary, multi, **bootstrap) if n_resamples > 0 else None

    figures = _write_figures(out, y_bin, prob_pneumonia, t, binary, multi, names, intervals, split_name)
    if images is not None and _write_montage(out, y_bin, prob_pneumonia, t, images, cams, films) is not None:
        figures["gradcam_montage"] = MONTAGE_FILE

    counts = np.bincount(y, minlength=len(names))
    report = {
        "schema_version": SCHEMA_VERSION,
        "pneumonia_monai_version": __version__,
        "split": split_name,
        "task": "multiclass" if multi is not None else "binary",
        "class_names": names,
        "n": int(y.size),
        "class_counts": {name: int(count) for name, count in zip(names, counts, strict=True)},
        "n_groups": None if groups is None else int(np.unique(groups).size),
        "threshold": threshold_info,
        "bootstrap": {
            "n_resamples": int(n_resamples),
            "confidence": float(confidence),
            "seed": int(seed),
            "method": "percentile",
            "stratified_by": "class",
            "unit": "film" if groups is None else "patient",
            "warning": interval_warning,
        },
        "binary": binary,
        "multiclass": multi,
        "confidence_intervals": intervals,
        "figures": figures,
        "extra": extra_ready,
    }
    ready = to_json_ready(report, where="report")
    write_json_atomic(out / METRICS_FILE, ready)
    logger.info(
        "%s: n=%d, ROC AUC %s, sensitivity %s, specificity %s at threshold %.3g -> %s",
        split_name,
        y.size,
        _short(binary["roc_auc"]),
        _short(binary["sensitivity"]),
        _short(binary["specificity"]),
        t,
        out / METRICS_FILE,
    )
    return ready


def _checked_inputs(
    y_true: Any, probs: Any, names: list[str], groups: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, ``(n, k)`` probabilities (two columns from 1-D pneumonia probabilities) and patient ids.

    Raises:
        ValueError: on malformed or mismatched input.
    """
    if len(names) < 2:
        raise ValueError(f"class_names must name at least 2 classes, got {names}")
    y = validate_labels(y_true, num_classes=len(names))
    p = np.asarray(probs)
    if p.ndim == 1:
        if len(names) != 2:
            raise ValueError(f"1-D probs are pneumonia probabilities of a 2-class model, not of {names}")
        p = np.stack([1.0 - p.astype(np.float64), p.astype(np.float64)], axis=1)
    p = validate_probs(p, y.size)
    if p.shape[1] != len(names):
        raise ValueError(f"probs has {p.shape[1]} columns but class_names has {len(names)} names")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (y.size,):
            raise ValueError(f"groups must have shape ({y.size},), got {groups.shape}")
    return y, p, groups


def _intervals(
    y: np.ndarray,
    p: np.ndarray,
    prob_pneumonia: np.ndarray,
    t: float,
    binary: Mapping[str, Any],
    multi: Mapping[str, Any] | None,
    **bootstrap: Any,
) -> dict[str, Any]:
    """Bootstrap intervals of :data:`BINARY_CI_METRICS` (and :data:`MULTICLASS_CI_METRICS` for 3 classes)."""
    y_bin = (y > 0).astype(np.int64)
    intervals: dict[str, Any] = {
        "binary": {
            name: _interval(
                y_bin,
                prob_pneumonia,
                roc_auc if name == "roc_auc" else threshold_metric(name, t),
                binary[name],
                **bootstrap,
            )
            for name in BINARY_CI_METRICS
        },
        "multiclass": None,
    }
    if multi is not None:
        fns = {"accuracy": multiclass_accuracy, "macro_f1": macro_f1}
        intervals["multiclass"] = {
            name: _interval(y, p, fns[name], multi[name], **bootstrap) for name in MULTICLASS_CI_METRICS
        }
    return intervals


def _write_figures(
    out: Path,
    y_bin: np.ndarray,
    prob_pneumonia: np.ndarray,
    t: float,
    binary: Mapping[str, Any],
    multi: Mapping[str, Any] | None,
    names: list[str],
    intervals: Mapping[str, Any] | None,
    split_name: str,
) -> dict[str, str]:
    """Draw the ROC, precision-recall, calibration and confusion-matrix figures; return their files."""
    auc_ci = None
    if intervals is not None:
        auc_ci = (intervals["binary"]["roc_auc"]["low"], intervals["binary"]["roc_auc"]["high"])
    marked: dict[str, Any] = {
        "threshold": t,
        "split_name": split_name,
    }  # the ROC and PR curves mark the threshold
    plot_roc(y_bin, prob_pneumonia, out / FIGURE_FILES["roc"], auc=binary["roc_auc"], auc_ci=auc_ci, **marked)
    plot_precision_recall(
        y_bin,
        prob_pneumonia,
        out / FIGURE_FILES["pr"],
        average_precision=binary["average_precision"],
        **marked,
    )
    plot_calibration(
        y_bin,
        prob_pneumonia,
        out / FIGURE_FILES["calibration"],
        n_bins=binary["ece_bins"],
        ece=binary["ece"],
        brier=binary["brier"],
        split_name=split_name,
    )
    if multi is not None:
        matrix, title = multi["confusion_matrix"], f"Confusion matrix (arg-max) - {split_name}"
    else:
        c = binary["confusion_matrix"]
        matrix = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
        title = f"Confusion matrix at threshold {t:.3g} - {split_name}"
    plot_confusion_matrix(matrix, names, out / FIGURE_FILES["confusion_matrix"], title=title)
    return dict(FIGURE_FILES)


def _short(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
