"""Fit the bundle's calibration on validation logits, and report calibration before and after.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") has one parameter
and leaves the ranking untouched: the ROC AUC is the same, only the probabilities move. The
temperature minimises the negative log-likelihood of the labels under ``softmax(logits / T)``; it is
found by a bounded scalar search over ``log T`` (deterministic, no learning rate), in float64.

A model trained with class-weighted cross-entropy (as this bundle's is) is also biased toward the
up-weighted class; one temperature cannot undo a bias. :func:`fit_temperature_and_bias` adds one logit
offset per class (the first fixed at 0): Platt scaling for two classes (Platt, 1999), the
"temperature + bias" form of vector scaling for three. It has ``classes`` parameters, still few enough
for a validation split of a thousand films, and it too keeps the two-class ranking.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

logger = logging.getLogger(__name__)

#: Search interval of ``log T``: T in [e^-3, e^3] (0.05 to 20).
LOG_T_BOUNDS: tuple[float, float] = (-3.0, 3.0)


def _check(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be (n, classes) with at least 2 classes, got shape {z.shape}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels must be ({z.shape[0]},), got shape {y.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    if y.dtype.kind not in "iu" or y.min(initial=0) < 0 or y.max(initial=0) >= z.shape[1]:
        raise ValueError(f"labels must be integers in [0, {z.shape[1]}), got {np.unique(y)[:5].tolist()}")
    return z, y.astype(np.int64)


def negative_log_likelihood(logits: Any, labels: Any, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z, y = _check(logits, labels)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logp = log_softmax(z / temperature, axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature that minimises the validation negative log-likelihood.

    Args:
        logits: ``(n, classes)`` network outputs before softmax (float32 or float64).
        labels: ``(n,)`` integer class labels.

    Raises:
        ValueError: on shapes, non-finite logits or labels out of range.
    """
    z, y = _check(logits, labels)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(z, y, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = float(np.exp(result.x))
    logger.info(
        "temperature %.4f: validation NLL %.4f -> %.4f (n=%d)",
        temperature,
        negative_log_likelihood(z, y, 1.0),
        negative_log_likelihood(z, y, temperature),
        len(y),
    )
    return temperature


def softmax_probs(logits: Any, temperature: float = 1.0, bias: Any = None) -> np.ndarray:
    """``softmax(logits / temperature + bias)`` in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    return np.exp(log_softmax(z, axis=1))


def fit_temperature_and_bias(logits: Any, labels: Any) -> tuple[float, list[float]]:
    """The temperature and per-class logit offsets (first 0) minimising the validation NLL.

    Returns:
        ``(temperature, bias)``: calibrated probabilities are ``softmax(logits / temperature + bias)``.

    Raises:
        ValueError: on shapes, non-finite logits or labels out of range.
    """
    z, y = _check(logits, labels)
    k = z.shape[1]

    def nll(params: np.ndarray) -> float:
        logp = log_softmax(z / np.exp(params[0]) + np.concatenate([[0.0], params[1:]]), axis=1)
        return float(-logp[np.arange(len(y)), y].mean())

    start = np.concatenate([[np.log(fit_temperature(z, y))], np.zeros(k - 1)])
    bounds = [LOG_T_BOUNDS] + [(-10.0, 10.0)] * (k - 1)
    result = minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    temperature = float(np.exp(result.x[0]))
    bias = [0.0, *(float(b) for b in result.x[1:])]
    logger.info(
        "temperature %.4f, bias %s: validation NLL %.4f (n=%d)", temperature, bias, result.fun, len(y)
    )
    return temperature, bias
