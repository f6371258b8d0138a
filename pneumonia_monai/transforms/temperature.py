"""Temperature scaling of logits (Guo et al., 2017): the bundle's calibration, applied before softmax.

The temperature is fitted on the validation split (``evaluation.calibration.fit_temperature``)
and stored as ``temperature`` in ``configs/inference.json``. The inference ``postprocessing`` divides the
logits by it before the softmax, so every consumer of the bundle's post-processing (``infer``, the DICOM
node, the MONAI Deploy operator, MONAI Label) reports the same calibrated probabilities. Dividing by one
positive number keeps the ranking (ROC AUC) and the arg-max of every film.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from pneumonia_monai import checks


def check_temperature(temperature: Any) -> float:
    """Return ``temperature`` as a float, or raise naming it.

    Raises:
        TypeError: if it is not a real number.
        ValueError: if it is not finite and positive.
    """
    return checks.number("temperature", temperature, above=0.0, what="a finite number > 0")


def check_bias(bias: Any) -> list[float]:
    """Return ``bias`` as a list of finite floats, or raise naming it."""
    if isinstance(bias, str | bytes) or not isinstance(bias, Sequence) or not bias:
        raise TypeError(f"logit bias must be a non-empty list of numbers, got {bias!r}")
    values = []
    for value in bias:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
            raise ValueError(f"logit bias must hold finite numbers, got {bias!r}")
        values.append(float(value))
    return values


class TemperatureScaled(MapTransform):
    """Scale the channel-first logits under ``keys``: ``logits / temperature + bias`` (float32 out).

    Args:
        keys: keys of the logits (usually ``"pred"``), ``(C,)`` or ``(C, ...)``.
        temperature: the fitted temperature, > 0 (1 leaves the logits as they are).
        bias: per-class logit offsets (Platt / vector-scaling bias), or None for none.
    """

    def __init__(
        self,
        keys: KeysCollection,
        temperature: float = 1.0,
        bias: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.temperature = check_temperature(temperature)
        self.bias = None if bias is None else check_bias(bias)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the logits scaled."""
        d = dict(data)
        for key in self.key_iterator(d):
            logits = torch.as_tensor(d[key]).float() / self.temperature
            if self.bias is not None:
                if logits.ndim < 1 or logits.shape[0] != len(self.bias):
                    raise ValueError(
                        f"bias has {len(self.bias)} values for logits of shape {tuple(logits.shape)}"
                    )
                offset = torch.tensor(self.bias, dtype=torch.float32)
                logits = logits + offset.reshape(-1, *([1] * (logits.ndim - 1)))
            d[key] = logits
        return d
