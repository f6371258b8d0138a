"""Metrics of the pneumonia classifier, with every convention written down.

Conventions shared by every function here:

* Binary labels are ``0`` (normal) and ``1`` (pneumonia); ``prob`` is the predicted probability of
  pneumonia and a film is called pneumonia when ``prob >= threshold``.
* Ratios whose denominator is zero (the sensitivity of a set without pneumonia, the PPV of a
  threshold that calls nothing pneumonia, ...) are ``nan``, never a silent ``0``.
* Ranking metrics (ROC AUC, average precision) come from scikit-learn, the reference
  implementation; they are ``nan`` with a logged warning, not an exception, when the set holds a
  single class.
* Empty or malformed input raises :class:`ValueError` (or :class:`TypeError` for a wrong type).

:func:`bootstrap_ci` gives percentile intervals, stratified by class and, when patient ids are
given, resampling whole patients (a cluster bootstrap). The small scalar functions
(:func:`roc_auc`, :func:`threshold_metric`, :func:`macro_f1`, :func:`multiclass_accuracy`) are the
fast metric callables to bootstrap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from pneumonia_monai import checks
from pneumonia_monai.decision import called_pneumonia, pneumonia_probabilities

logger = logging.getLogger(__name__)

#: A metric to bootstrap: ``metric(y_true, prob) -> float`` on one (re)sample.
MetricFn = Callable[[np.ndarray, np.ndarray], float]

#: Metrics that depend on the operating threshold, in the order :func:`binary_metrics` reports them.
THRESHOLD_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")

#: Default number of equal-width bins of the expected calibration error.
DEFAULT_ECE_BINS = 10


# --------------------------------------------------------------------------------------------------
# input checks


def _as_labels(y_true: Any, *, num_classes: int | None = None, name: str = "y_true") -> np.ndarray:
    """Return ``y_true`` as a 1-D int64 array of class indices, or raise."""
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: there is nothing to evaluate")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must hold integer class labels, got values such as {arr[:5].tolist()}")
    labels = arr.astype(np.int64)
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        bad = sorted(set(np.unique(labels).tolist()) - set(range(num_classes)))
        raise ValueError(f"{name} must hold labels in 0..{num_classes - 1}, got {bad}")
    return labels


def _as_prob(prob: Any, n: int, *, name: str = "prob") -> np.ndarray:
    """Return ``prob`` as a 1-D float64 array of ``n`` probabilities in [0, 1], or raise."""
    arr = np.asarray(prob)
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        raise TypeError(f"{name} must hold probabilities, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but y_true has {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got range [{arr.min()!r}, {arr.max()!r}]")
    return arr


def _as_probs(probs: Any, n: int, *, name: str = "probs", atol: float = 1e-4) -> np.ndarray:
    """Return ``probs`` as an ``(n, k)`` float64 array whose rows are probability vectors, or raise."""
    arr = np.asarray(probs)
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        raise TypeError(f"{name} must hold probabilities, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must have shape (n, k) with k >= 2, got {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but y_true has {n}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"{name} must hold finite probabilities in [0, 1]")
    sums = arr.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=atol):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(
            f"rows of {name} must sum to 1 (softmax outputs); row {worst} sums to {sums[worst]!r}"
        )
    return arr


def _check_threshold(threshold: Any) -> float:
    return checks.probability("threshold", threshold)


def _check_binary(y: np.ndarray) -> None:
    if y.min() < 0 or y.max() > 1:
        raise ValueError(f"binary y_true must hold 0 (normal) and 1 (pneumonia), got {np.unique(y).tolist()}")


def validate_binary(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(y, p)`` as int64 0/1 labels and float64 probabilities of pneumonia, or raise.

    Raises:
        ValueError: if the input is empty, 0/1 labels and probabilities in [0, 1] of the same
            length are not what it holds.
        TypeError: if either holds non-numbers.
    """
    y = _as_labels(y_true)
    _check_binary(y)
    return y, _as_prob(prob, y.size)


def validate_labels(y_true: Any, num_classes: int | None = None) -> np.ndarray:
    """Return ``y_true`` as a non-empty 1-D int64 array of labels in ``0..num_classes-1``, or raise.

    Raises:
        ValueError: if it is empty, not 1-D, or holds non-integers or labels out of range.
        TypeError: if it holds non-numbers.
    """
    return _as_labels(y_true, num_classes=num_classes)


def validate_probs(probs: Any, n: int) -> np.ndarray:
    """Return ``probs`` as an ``(n, k)`` float64 array of softmax rows (summing to 1), or raise.

    Raises:
        ValueError: on a wrong shape, values outside [0, 1] or rows that do not sum to 1.
        TypeError: if it holds non-numbers.
    """
    return _as_probs(probs, n)


def validate_threshold(threshold: Any) -> float:
    """Return ``threshold`` as a float in [0, 1], or raise ``TypeError`` / ``ValueError``."""
    return _check_threshold(threshold)


# --------------------------------------------------------------------------------------------------
# confusion-based metrics


def _ratio(num: float, den: float) -> float:
    """``num / den``, or ``nan`` when ``den`` is zero."""
    return float(num) / float(den) if den else float("nan")


def confusion_counts(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, int]:
    """Return ``{"tn", "fp", "fn", "tp"}`` of the rule ``prob >= threshold`` -> pneumonia.

    Inputs are not validated: the public functions that call this do it.
    """
    pred = called_pneumonia(prob, threshold)
    pos = y_true == 1
    tp = int(np.count_nonzero(pred & pos))
    fp = int(np.count_nonzero(pred & ~pos))
    fn = int(np.count_nonzero(pos)) - tp
    tn = int(pos.size) - tp - fp - fn
    return {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def rates_from_counts(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    """Return the threshold metrics of a 2 x 2 confusion matrix (:data:`THRESHOLD_METRICS`).

    * accuracy = (tp + tn) / n
    * sensitivity (recall of pneumonia) = tp / (tp + fn)
    * specificity = tn / (tn + fp)
    * ppv (precision) = tp / (tp + fp); npv = tn / (tn + fn)
    * f1 = 2 tp / (2 tp + fp + fn), the harmonic mean of ppv and sensitivity, which stays defined
      (``0``) when nothing is called pneumonia but some films have it.

    Any of them is ``nan`` when its denominator is zero.
    """
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def _threshold_metric(y_true: np.ndarray, prob: np.ndarray, *, name: str, threshold: float) -> float:
    counts = confusion_counts(y_true, prob, threshold)
    return rates_from_counts(**counts)[name]


def threshold_metric(name: str, threshold: float) -> MetricFn:
    """Return ``metric(y_true, prob)`` computing ``name`` at a fixed ``threshold`` (for bootstrapping).

    Args:
        name: one of :data:`THRESHOLD_METRICS`.
        threshold: the operating threshold, applied as ``prob >= threshold``.

    Raises:
        ValueError: on an unknown ``name`` or a threshold outside [0, 1].
    """
    if name not in THRESHOLD_METRICS:
        raise ValueError(f"name must be one of {THRESHOLD_METRICS}, got {name!r}")
    return partial(_threshold_metric, name=name, threshold=_check_threshold(threshold))


def roc_auc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic; ``nan`` when a class is missing. No input checks.

    AUC = (number of (pneumonia, normal) pairs where the pneumonia film scores higher, ties counting
    one half) / (n_pneumonia * n_normal). It equals :func:`sklearn.metrics.roc_auc_score` and is
    cheap enough to be called thousands of times by :func:`bootstrap_ci`.
    """
    pos = y_true == 1
    n_pos = int(np.count_nonzero(pos))
    n_neg = int(pos.size) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(prob)  # average ranks: a tie gives each member of the pair half a win
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --------------------------------------------------------------------------------------------------
# calibration


def reliability_table(y_true: Any, prob: Any, n_bins: int = DEFAULT_ECE_BINS) -> dict[str, np.ndarray]:
    """Bin predictions into ``n_bins`` equal-width bins of [0, 1] for calibration.

    Bin ``b`` holds the predictions with ``b / n_bins <= prob < (b + 1) / n_bins``; the last bin also
    holds ``prob == 1``. The bin of ``p`` is computed as ``min(floor(p * n_bins), n_bins - 1)``.

    Returns:
        ``{"edges": (n_bins + 1,), "count": (n_bins,), "confidence": (n_bins,), "observed": (n_bins,)}``
        where ``confidence`` is the mean predicted probability of pneumonia in the bin and
        ``observed`` the fraction of films in the bin that have pneumonia (both ``nan`` for an
        empty bin).

    Raises:
        ValueError: on malformed input or ``n_bins < 1``.
    """
    checks.positive_int("n_bins", n_bins)
    y, p = validate_binary(y_true, prob)
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=n_bins) / count
        observed = np.bincount(index, weights=y.astype(np.float64), minlength=n_bins) / count
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "confidence": confidence,
        "observed": observed,
    }


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Expected calibration error of the predicted probability of pneumonia.

    ECE = sum over non-empty bins b of ``|B_b| / n * |acc_b - conf_b|``, with the equal-width bins of
    :func:`reliability_table`, where ``conf_b`` is the mean predicted probability of class 1
    (pneumonia) in bin b and ``acc_b`` the observed fraction of class-1 films in bin b. (This is the
    binary, class-1 form; it is not the top-label "confidence" ECE of multi-class papers.)

    Raises:
        ValueError: on malformed input.
    """
    table = reliability_table(y_true, prob, n_bins)
    count = table["count"]
    filled = count > 0
    gaps = np.abs(table["observed"][filled] - table["confidence"][filled])
    return float(np.sum(count[filled] * gaps) / count.sum())


# --------------------------------------------------------------------------------------------------
# public metric sets


def binary_metrics(
    y_true: Any, prob: Any, threshold: float, *, n_bins: int = DEFAULT_ECE_BINS
) -> dict[str, Any]:
    """Return every metric of a pneumonia-vs-normal prediction at one operating threshold.

    Args:
        y_true: ``(n,)`` labels, 0 normal and 1 pneumonia.
        prob: ``(n,)`` predicted probabilities of pneumonia.
        threshold: a film is called pneumonia when ``prob >= threshold``.
        n_bins: bins of the expected calibration error.

    Returns:
        A dictionary with ``n``, ``n_positive``, ``n_negative``, ``threshold``, ``roc_auc``,
        ``average_precision``, the :data:`THRESHOLD_METRICS` (see :func:`rates_from_counts`),
        ``brier`` (mean of ``(prob - y)**2``), ``ece`` and ``ece_bins`` (see
        :func:`expected_calibration_error`) and ``confusion_matrix`` = ``{"tn", "fp", "fn", "tp"}``.
        ``roc_auc`` is ``nan`` when a class is missing, ``average_precision`` when no film has
        pneumonia; a warning is logged then.

    Raises:
        ValueError: if the input is empty, of mismatched length, not 0/1 labels, or not
            probabilities; or if ``threshold`` is outside [0, 1].
        TypeError: if ``threshold`` is not a number.
    """
    y, p = validate_binary(y_true, prob)
    t = _check_threshold(threshold)
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size) - n_pos
    if n_pos == 0 or n_neg == 0:
        logger.warning(
            "all %d film(s) are %s: ROC AUC is undefined (nan)%s",
            y.size,
            "pneumonia" if n_neg == 0 else "normal",
            " and so are average precision and sensitivity" if n_pos == 0 else " and so is specificity",
        )
        auc = float("nan")
    else:
        auc = float(roc_auc_score(y, p))
    ap = float(average_precision_score(y, p)) if n_pos > 0 else float("nan")
    counts = confusion_counts(y, p, t)
    return {
        "n": int(y.size),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "threshold": t,
        "roc_auc": auc,
        "average_precision": ap,
        **rates_from_counts(**counts),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p, n_bins),
        "ece_bins": int(n_bins),
        "confusion_matrix": counts,
    }


def multiclass_confusion(y_true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(k, k)`` confusion matrix, rows = true class, columns = predicted class. No input checks."""
    return np.bincount(y_true * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _per_class_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    den = cm.sum(axis=0) + cm.sum(axis=1)  # (tp + fp) + (tp + fn) = 2 tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * tp / den, np.nan)


def _macro(values: np.ndarray) -> float:
    """Mean over the classes where the value is defined; ``nan`` when none is."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro F1 of the arg-max prediction (mean over classes with a defined F1). No input checks."""
    cm = multiclass_confusion(y_true, np.argmax(probs, axis=1), probs.shape[1])
    return _macro(_per_class_f1(cm))


def multiclass_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Accuracy of the arg-max prediction. No input checks."""
    return float(np.mean(np.argmax(probs, axis=1) == y_true))


def multiclass_metrics(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    *,
    threshold: float = 0.5,
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, Any]:
    """Return the metrics of a k-class prediction and of its pneumonia-vs-normal view.

    The predicted class is the arg-max of ``probs`` (the first class on a tie). Class 0 must be
    ``normal``: the binary view scores ``prob_pneumonia = 1 - probs[:, 0]``
    (:func:`pneumonia_monai.decision.pneumonia_probabilities`) against ``y_true > 0`` with
    :func:`binary_metrics` at ``threshold``.

    Args:
        y_true: ``(n,)`` labels in ``0..k-1``.
        probs: ``(n, k)`` softmax probabilities.
        class_names: the ``k`` class names, in label order.
        threshold: operating threshold of the binary view.
        n_bins: bins of the binary view's ECE.

    Returns:
        ``n``, ``class_names``, ``class_counts``, ``accuracy``, ``macro_f1`` (mean of the per-class F1
        over the classes where it is defined), ``per_class`` = ``{name: {"precision", "recall",
        "f1", "support", "roc_auc"}}`` (precision ``nan`` for a class never predicted, recall ``nan``
        for a class absent from ``y_true``, ``roc_auc`` one-vs-rest), ``confusion_matrix`` (k x k
        nested lists, rows = true class, columns = predicted class), ``macro_roc_auc_ovr`` (mean of
        the one-vs-rest AUCs, ``nan`` with a warning unless every class is present, as
        scikit-learn refuses it then) and ``binary`` (the binary view).

    Raises:
        ValueError: on empty or malformed input, or class names that do not match ``probs``.
    """
    names = [str(name) for name in class_names]
    y = _as_labels(y_true)
    p = _as_probs(probs, y.size)
    k = p.shape[1]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names but probs has {k} columns")
    if names[0].lower() != "normal":
        raise ValueError(f"class 0 must be 'normal' for the pneumonia-vs-normal view, got {names[0]!r}")
    y = _as_labels(y, num_classes=k)
    pred = np.argmax(p, axis=1)
    cm = multiclass_confusion(y, pred, k)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    f1 = _per_class_f1(cm)
    aucs = np.array(
        [float(roc_auc_score(y == c, p[:, c])) if 0 < support[c] < y.size else np.nan for c in range(k)]
    )
    missing = [names[c] for c in range(k) if support[c] == 0]
    if missing:
        logger.warning(
            "no film of class(es) %s: their recall and one-vs-rest AUC are undefined (nan)", missing
        )
    macro_auc = float("nan") if np.isnan(aucs).any() else float(aucs.mean())
    return {
        "n": int(y.size),
        "class_names": names,
        "class_counts": {names[c]: int(support[c]) for c in range(k)},
        "accuracy": float(tp.sum() / y.size),
        "macro_f1": _macro(f1),
        "macro_roc_auc_ovr": macro_auc,
        "per_class": {
            names[c]: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
                "roc_auc": float(aucs[c]),
            }
            for c in range(k)
        },
        "confusion_matrix": cm.astype(int).tolist(),
        "binary": binary_metrics(
            (y > 0).astype(np.int64), pneumonia_probabilities(p, names), threshold, n_bins=n_bins
        ),
    }


# --------------------------------------------------------------------------------------------------
# bootstrap


def _expand(starts: np.ndarray, counts: np.ndarray, order: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Sample indices of the groups ``chosen`` (with repetition), group after group."""
    lens = counts[chosen]
    ends = np.cumsum(lens)
    offsets = np.repeat(starts[chosen] - (ends - lens), lens) + np.arange(ends[-1] if ends.size else 0)
    return order[offsets]


def bootstrap_ci(
    y_true: Any,
    prob: Any,
    metric_fn: MetricFn,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Any | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(y_true, prob)``, stratified, optionally by patient.

    Without ``groups`` each film is its own resampling unit. With ``groups`` (patient ids) the units
    are patients: a resample draws patients with replacement and takes all of their films (the
    cluster bootstrap). Films of one patient are correlated, so resampling films of patient-grouped
    data gives intervals that are too narrow; the cluster bootstrap is the honest one.

    Units are stratified by the set of classes they contain (for films: their class), and each
    stratum is resampled to its own size, so every resample has the class mix of the data and a
    ranking metric is defined in all of them. Stratum ``s`` (in the order of
    ``numpy.unique(..., axis=0)`` of the class-presence rows) draws an ``(n_resamples, n_units_s)``
    matrix of unit indices from ``numpy.random.default_rng(seed)``; units are ordered by
    ``numpy.unique(groups)``. The interval is ``numpy.percentile`` (linear interpolation) of the
    resampled values at ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``. Resamples where the
    metric is ``nan`` are dropped with a warning; if all are, the interval is ``(nan, nan)``.

    The threshold of a threshold metric stays fixed: the interval does not include the uncertainty
    of choosing it.

    Args:
        y_true: ``(n,)`` class labels.
        prob: ``(n,)`` or ``(n, k)`` predictions, indexed along the first axis with ``y_true``.
        metric_fn: ``metric_fn(y_true, prob) -> float``; see :func:`roc_auc`,
            :func:`threshold_metric`, :func:`macro_f1`.
        n_resamples: number of bootstrap resamples (>= 1).
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the generator; the same inputs and seed give the same interval.
        groups: ``(n,)`` patient ids, or ``None`` to resample films.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: on empty or mismatched input, ``n_resamples < 1`` or ``confidence`` outside (0, 1).
        TypeError: if ``metric_fn`` is not callable.
    """
    y = _as_labels(y_true)
    p = np.asarray(prob)
    if p.ndim not in (1, 2) or p.shape[0] != y.size:
        raise ValueError(f"prob must have shape (n,) or (n, k) with n = {y.size}, got {p.shape}")
    if not callable(metric_fn):
        raise TypeError(f"metric_fn must be callable, got {type(metric_fn).__name__}")
    checks.positive_int("n_resamples", n_resamples)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if groups is None:
        unit = np.arange(y.size)
    else:
        g = np.asarray(groups)
        if g.ndim != 1 or g.shape[0] != y.size:
            raise ValueError(f"groups must have shape ({y.size},), got {g.shape}")
        _, unit = np.unique(g, return_inverse=True)
        unit = unit.reshape(-1)
    counts = np.bincount(unit)
    n_units = counts.size
    order = np.argsort(unit, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    classes, class_index = np.unique(y, return_inverse=True)
    presence = np.zeros((n_units, classes.size), dtype=bool)
    presence[unit, class_index.reshape(-1)] = True
    _, stratum = np.unique(presence, axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)

    rng = np.random.default_rng(seed)
    chosen = np.empty((n_resamples, n_units), dtype=np.int64)
    column = 0
    for s in range(int(stratum.max()) + 1):
        members = np.flatnonzero(stratum == s)
        chosen[:, column : column + members.size] = members[
            rng.integers(0, members.size, (n_resamples, members.size))
        ]
        column += members.size

    values = np.empty(n_resamples, dtype=np.float64)
    singletons = bool(np.all(counts == 1))
    for r in range(n_resamples):
        idx = order[chosen[r]] if singletons else _expand(starts, counts, order, chosen[r])
        values[r] = metric_fn(y[idx], p[idx])
    finite = ~np.isnan(values)
    if not finite.any():
        logger.warning("the metric is nan in all %d bootstrap resamples: no interval", n_resamples)
        return float("nan"), float("nan")
    if not finite.all():
        logger.warning(
            "the metric is nan in %d of %d bootstrap resamples; they are left out",
            int((~finite).sum()),
            n_resamples,
        )
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.percentile(values[finite], [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)
