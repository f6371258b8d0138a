"""Temperature scaling of logits (Guo et al., 2017): the bundle's calibration, applied before softmax.

The temperature is fitted on the validation split (``evaluation.calibration.fit_temperature``)
and stored as ``temperature`` in ``configs/inference.json``. The inference ``postprocessing`` divides the
logits by it before the softmax, so every consumer of the bundle's post-processing (``infer``, the DICOM
node, the MONAI Deploy operator, MONAI Label) reports the same calibrated probabilities. Dividing by one
positive number keeps the ranking (ROC AUC) and the arg-max of every film.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


def check_temperature(temperature: Any) -> float:
    """Return ``temperature`` as a float, or raise naming it.

    Raises:
        TypeError: if it is not a real number.
        ValueError: if it is not finite and positive.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    if not math.isfinite(float(temperature)) or float(temperature) <= 0.0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


class TemperatureScaled(MapTransform):
    """Divide the logits under ``keys`` by ``temperature`` (float32 out).

    Args:
        keys: keys of the logits (usually ``"pred"``).
        temperature: the fitted temperature, > 0 (1 leaves the logits as they are).
    """

    def __init__(
        self, keys: KeysCollection, temperature: float = 1.0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.temperature = check_temperature(temperature)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a copy of ``data`` with the logits scaled."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(d[key]).float() / self.temperature
        return d
