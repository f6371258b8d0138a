"""The decision rule, written once: p(pneumonia) from class probabilities, and the class a heatmap explains.

Class layouts (``class_names`` of the bundle):

- ``("normal", "pneumonia")``: p(pneumonia) is the second probability;
- ``("normal", "bacterial", "viral")``: p(pneumonia) is ``1 - p(normal)`` (= p(bacterial) + p(viral)).

A film is called pneumonia when ``p(pneumonia) >= threshold`` (:func:`is_pneumonia`, :func:`label_at`,
and :func:`called_pneumonia` for arrays). A heatmap explains the pneumonia output,
or for three classes the likelier pneumonia subtype (never "normal": the map shows where the model
saw pneumonia). Inference, evaluation, the DICOM node and the Deploy and Label apps all call these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Two-class layout.
BINARY_CLASSES: tuple[str, ...] = ("normal", "pneumonia")
#: Three-class layout.
SUBTYPE_CLASSES: tuple[str, ...] = ("normal", "bacterial", "viral")
#: The two calls a film gets at the threshold.
PNEUMONIA = "pneumonia"
NORMAL = "normal"


def _layout(class_names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(class_names)
    if names not in (BINARY_CLASSES, SUBTYPE_CLASSES):
        raise ValueError(
            f"class_names must be {list(BINARY_CLASSES)} or {list(SUBTYPE_CLASSES)}, got {names!r}"
        )
    return names


def pneumonia_probability(probs: Sequence[float] | np.ndarray, class_names: Sequence[str]) -> float:
    """p(pneumonia) of one film from its class probabilities, clipped to [0, 1].

    Raises:
        ValueError: on an unknown class layout or a probability vector of another length.
    """
    names = _layout(class_names)
    if len(probs) != len(names):
        raise ValueError(f"{len(probs)} probabilities for classes {names}")
    value = float(probs[1]) if names == BINARY_CLASSES else 1.0 - float(probs[0])
    return min(1.0, max(0.0, value))


def is_pneumonia(prob_pneumonia: float, threshold: float) -> bool:
    """The decision: a film is called pneumonia when ``prob_pneumonia >= threshold``."""
    return bool(prob_pneumonia >= threshold)


def label_at(prob_pneumonia: float, threshold: float) -> str:
    """:data:`PNEUMONIA` or :data:`NORMAL`: the call :func:`is_pneumonia` makes, by name."""
    return PNEUMONIA if is_pneumonia(prob_pneumonia, threshold) else NORMAL


def called_pneumonia(prob_pneumonia: np.ndarray, threshold: float) -> np.ndarray:
    """:func:`is_pneumonia` of every film of an array of p(pneumonia): a boolean array of its shape."""
    return np.asarray(prob_pneumonia) >= threshold


def explained_class(probs: Sequence[float] | np.ndarray, class_names: Sequence[str]) -> int:
    """The output index a heatmap explains: pneumonia, or the likelier of bacterial and viral.

    For a three-class model the map shows why the model saw pneumonia, even on a film it calls normal
    (whose arg-max is "normal"): bacterial on a tie. Inference, the bundle's evaluation (its Grad-CAM
    montage) and ``scripts/heatmap_mass.py`` explain this class.
    """
    names = _layout(class_names)
    if names == BINARY_CLASSES:
        return 1
    return 1 if float(probs[1]) >= float(probs[2]) else 2


def pneumonia_probabilities(probs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """:func:`pneumonia_probability` of every row of an ``(n, classes)`` array."""
    return np.array([pneumonia_probability(row, class_names) for row in np.asarray(probs)], dtype=np.float64)
