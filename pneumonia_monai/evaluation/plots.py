"""Report figures: ROC, precision-recall, reliability diagram and confusion matrix.

Every figure is a :class:`matplotlib.figure.Figure` built directly (no ``pyplot`` state, no backend
switch) and written as PNG through a temporary file in the target folder and a rename, so a reader
never sees half a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from pneumonia_monai.atomic import atomic_open
from pneumonia_monai.evaluation.metrics import (
    DEFAULT_ECE_BINS,
    confusion_counts,
    rates_from_counts,
    reliability_table,
    validate_binary,
    validate_threshold,
)

#: Resolution of the saved figures.
DPI = 110


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file in the same folder, then rename).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return path


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ci_text(ci: tuple[float, float] | None) -> str:
    if ci is None or any(v is None or math.isnan(v) for v in ci):
        return ""
    return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


def _unavailable(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)


def plot_roc(
    y_true: Any,
    prob: Any,
    path: str | Path,
    *,
    threshold: float | None = None,
    auc: float | None = None,
    auc_ci: tuple[float, float] | None = None,
    split_name: str = "",
) -> Path:
    """Draw the ROC curve of the pneumonia probability, with the operating point marked.

    Args:
        y_true: ``(n,)`` labels, 0 normal and 1 pneumonia.
        prob: ``(n,)`` predicted probabilities of pneumonia.
        path: PNG file to write.
        threshold: operating threshold (``prob >= threshold`` -> pneumonia) to mark, if any.
        auc: the ROC AUC to print in the title (computed elsewhere, so the figure and the report agree).
        auc_ci: its confidence interval.
        split_name: name of the evaluated set, for the title.
    """
    y, p = validate_binary(y_true, prob)
    fig = Figure(figsize=(5.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    if _both_classes(y):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color="C0", linewidth=2, label="ROC")
        if threshold is not None:
            rates = rates_from_counts(**confusion_counts(y, p, validate_threshold(threshold)))
            ax.plot(
                1.0 - rates["specificity"],
                rates["sensitivity"],
                marker="o",
                markersize=9,
                color="C3",
                linestyle="none",
                label=(
                    f"threshold {threshold:.3g}: sens {_fmt(rates['sensitivity'])}, "
                    f"spec {_fmt(rates['specificity'])}"
                ),
            )
    else:
        _unavailable(ax, "ROC undefined: the set holds a single class")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    where = f" - {split_name}" if split_name else ""
    auc_text = _fmt(auc if auc is not None else math.nan)
    ax.set_title(f"ROC, pneumonia vs normal{where}, n={y.size}\nAUC {auc_text}{_ci_text(auc_ci)}")
    return save_figure(fig, path)


def plot_precision_recall(
    y_true: Any,
    prob: Any,
    path: str | Path,
    *,
    threshold: float | None = None,
    average_precision: float | None = None,
    split_name: str = "",
) -> Path:
    """Draw the precision-recall curve of the pneumonia probability, with prevalence as baseline.

    Args:
        y_true: ``(n,)`` labels, 0 normal and 1 pneumonia.
        prob: ``(n,)`` predicted probabilities of pneumonia.
        path: PNG file to write.
        threshold: operating threshold to mark, if any.
        average_precision: the average precision to print in the title.
        split_name: name of the evaluated set, for the title.
    """
    y, p = validate_binary(y_true, prob)
    fig = Figure(figsize=(5.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    if y.sum() > 0:
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, color="C0", linewidth=2, drawstyle="steps-post", label="precision-recall")
        prevalence = float(y.mean())
        ax.axhline(prevalence, linestyle="--", color="0.6", linewidth=1, label=f"prevalence {prevalence:.3f}")
        if threshold is not None:
            rates = rates_from_counts(**confusion_counts(y, p, validate_threshold(threshold)))
            if not math.isnan(rates["ppv"]):
                ax.plot(
                    rates["sensitivity"],
                    rates["ppv"],
                    marker="o",
                    markersize=9,
                    color="C3",
                    linestyle="none",
                    label=f"threshold {threshold:.3g}: recall {_fmt(rates['sensitivity'])}, "
                    f"precision {_fmt(rates['ppv'])}",
                )
        ax.legend(loc="lower left", fontsize="small")
    else:
        _unavailable(ax, "precision-recall undefined: no pneumonia film")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.grid(alpha=0.3)
    where = f" - {split_name}" if split_name else ""
    ap = average_precision if average_precision is not None else math.nan
    ax.set_title(f"Precision-recall, pneumonia vs normal{where}, n={y.size}\naverage precision {_fmt(ap)}")
    return save_figure(fig, path)


def plot_calibration(
    y_true: Any,
    prob: Any,
    path: str | Path,
    *,
    n_bins: int = DEFAULT_ECE_BINS,
    ece: float | None = None,
    brier: float | None = None,
    split_name: str = "",
) -> Path:
    """Draw a reliability diagram of the pneumonia probability above a histogram of the predictions.

    The bins are those of :func:`~pneumonia_monai.evaluation.metrics.reliability_table`.

    Args:
        y_true: ``(n,)`` labels, 0 normal and 1 pneumonia.
        prob: ``(n,)`` predicted probabilities of pneumonia.
        path: PNG file to write.
        n_bins: number of equal-width bins.
        ece: expected calibration error to print in the title.
        brier: Brier score to print in the title.
        split_name: name of the evaluated set, for the title.
    """
    y, p = validate_binary(y_true, prob)
    table = reliability_table(y, p, n_bins)
    fig = Figure(figsize=(5.5, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = table["count"] > 0
    top.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfect calibration")
    top.plot(
        table["confidence"][filled],
        table["observed"][filled],
        marker="o",
        color="C0",
        linewidth=2,
        label="model",
    )
    top.set_xlim(-0.02, 1.02)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("observed fraction with pneumonia")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    where = f" - {split_name}" if split_name else ""
    top.set_title(
        f"Reliability{where}, {n_bins} bins\nECE {_fmt(ece if ece is not None else math.nan)}, "
        f"Brier {_fmt(brier if brier is not None else math.nan)}"
    )
    edges = table["edges"]
    bottom.hist(
        [p[y == 0], p[y == 1]],
        bins=edges,
        stacked=True,
        color=["C2", "C1"],
        label=["normal", "pneumonia"],
    )
    bottom.set_xlabel("predicted probability of pneumonia")
    bottom.set_ylabel("films")
    bottom.legend(loc="upper center", fontsize="small", ncols=2)
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: Any,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix (rows = true class, columns = predicted) with counts and row percentages.

    Args:
        matrix: ``(k, k)`` counts.
        class_names: the ``k`` class names.
        path: PNG file to write.
        title: figure title.

    Raises:
        ValueError: if ``matrix`` is not square or does not match ``class_names``.
    """
    cm = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"matrix must have shape ({k}, {k}) for {k} class names, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    fig = Figure(figsize=(1.6 * k + 2.6, 1.5 * k + 2.0), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * share[i, j]:.1f}%",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), labels=list(class_names))
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}, n={int(cm.sum())}")
    return save_figure(fig, path)
