"""Choosing the operating threshold of the pneumonia probability.

A film is called pneumonia when ``prob >= threshold``. The candidate thresholds are the distinct
predicted probabilities of the set: between two neighbouring ones every threshold gives the same
calls on that set, and taking the observed value is what :func:`sklearn.metrics.roc_curve` does.

Rules:

``"max_specificity_at_sensitivity"`` (default)
    Among the candidates whose sensitivity is at least ``min_sensitivity``, the one with the highest
    specificity; among equal specificities, the highest threshold. The lowest candidate calls every
    film pneumonia, so its sensitivity is 1 and the feasible set is never empty. As specificity never
    decreases when the threshold rises, this is also the highest candidate that keeps the sensitivity.
``"youden"``
    The candidate with the largest Youden index ``J = sensitivity + specificity - 1``; among equal
    ``J``, the highest threshold. ``J`` is compared exactly, as the integer
    ``tp * n_normal + tn * n_pneumonia``.
``"fixed"``
    The given ``threshold``, unchanged.

A threshold chosen on a set and scored on the same set is optimistic: choose it on validation data
and report it on a held-out test set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pneumonia_monai.decision import called_pneumonia
from pneumonia_monai.evaluation.metrics import validate_binary, validate_threshold

logger = logging.getLogger(__name__)

#: Threshold rules understood by :func:`choose_threshold`.
RULES: tuple[str, ...] = ("max_specificity_at_sensitivity", "youden", "fixed")


@dataclass(frozen=True)
class ThresholdChoice:
    """An operating threshold and how it was chosen.

    Attributes:
        threshold: a film is called pneumonia when ``prob >= threshold``.
        sensitivity: sensitivity at ``threshold`` on the set it was chosen on (``nan`` without
            pneumonia films).
        specificity: specificity at ``threshold`` on that set (``nan`` without normal films).
        rule: one of :data:`RULES`.
        params: the rule's parameters (``min_sensitivity`` or ``threshold``).
    """

    threshold: float
    sensitivity: float
    specificity: float
    rule: str
    params: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary."""
        return {
            "threshold": float(self.threshold),
            "sensitivity": float(self.sensitivity),
            "specificity": float(self.specificity),
            "rule": self.rule,
            "params": {key: float(value) for key, value in self.params.items()},
        }


def operating_points(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the candidate thresholds and the true-positive and true-negative counts at each.

    Returns:
        ``(thresholds, tp, tn)``: the distinct values of ``prob`` in increasing order, and for each
        the number of pneumonia films with ``prob >= t`` and of normal films with ``prob < t``.

    Raises:
        ValueError: on empty or malformed input.
    """
    y, p = validate_binary(y_true, prob)
    thresholds = np.unique(p)
    pos = np.sort(p[y == 1])
    neg = np.sort(p[y == 0])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    tn = np.searchsorted(neg, thresholds, side="left")
    return thresholds, tp.astype(np.int64), tn.astype(np.int64)


def _rates_at(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    pred = called_pneumonia(p, threshold)
    n_pos = int(np.count_nonzero(y == 1))
    n_neg = int(y.size) - n_pos
    sens = np.count_nonzero(pred & (y == 1)) / n_pos if n_pos else float("nan")
    spec = np.count_nonzero(~pred & (y == 0)) / n_neg if n_neg else float("nan")
    return float(sens), float(spec)


def choose_threshold(
    y_true: Any,
    prob: Any,
    *,
    rule: str = "max_specificity_at_sensitivity",
    min_sensitivity: float = 0.95,
    threshold: float | None = None,
) -> ThresholdChoice:
    """Choose the operating threshold of ``prob`` by ``rule`` (see the module documentation).

    Args:
        y_true: ``(n,)`` labels, 0 normal and 1 pneumonia.
        prob: ``(n,)`` predicted probabilities of pneumonia.
        rule: one of :data:`RULES`.
        min_sensitivity: the sensitivity to keep, in (0, 1], for the default rule.
        threshold: the threshold of the ``"fixed"`` rule (and only of it).

    Returns:
        The threshold with its sensitivity and specificity on ``(y_true, prob)``.

    Raises:
        ValueError: on an unknown rule, a ``min_sensitivity`` outside (0, 1], a missing or
            misplaced ``threshold``, malformed input, or (for the data-driven rules) a set without
            pneumonia films or without normal films, on which sensitivity or specificity is undefined.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    y, p = validate_binary(y_true, prob)
    if rule == "fixed":
        if threshold is None:
            raise ValueError("rule 'fixed' needs a threshold")
        value = validate_threshold(threshold)
        sens, spec = _rates_at(y, p, value)
        return ThresholdChoice(value, sens, spec, rule, {"threshold": value})
    if threshold is not None:
        raise ValueError(f"threshold={threshold!r} is only used by rule 'fixed', not {rule!r}")
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"rule {rule!r} needs pneumonia and normal films, got {n_pos} pneumonia and {n_neg} normal"
        )
    thresholds, tp, tn = operating_points(y, p)
    if rule == "youden":
        score = tp * n_neg + tn * n_pos  # (J + 1) * n_pos * n_neg, exact
        params: dict[str, float] = {}
    else:
        if isinstance(min_sensitivity, bool) or not 0.0 < float(min_sensitivity) <= 1.0:
            raise ValueError(f"min_sensitivity must lie in (0, 1], got {min_sensitivity!r}")
        feasible = tp / n_pos >= float(min_sensitivity)
        # The lowest threshold calls every film pneumonia: sensitivity 1, so ``feasible`` is never empty.
        score = np.where(feasible, tn, -1)
        params = {"min_sensitivity": float(min_sensitivity)}
    best = np.flatnonzero(score == score.max())[-1]  # thresholds increase: the last tie is the highest
    choice = ThresholdChoice(
        float(thresholds[best]), float(tp[best] / n_pos), float(tn[best] / n_neg), rule, params
    )
    logger.debug(
        "threshold %.6g by %s: sensitivity %.4f, specificity %.4f",
        choice.threshold,
        rule,
        choice.sensitivity,
        choice.specificity,
    )
    return choice
