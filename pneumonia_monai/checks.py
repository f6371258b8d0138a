"""Value checks shared by the result writers (the manifest, the DICOM SR); torch-free."""

from __future__ import annotations

import math
import numbers


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number in [0, 1].

    ``numbers.Real`` admits numpy scalars (``np.float32`` is not a ``float``); ``bool`` is refused.

    Raises:
        TypeError: if ``value`` is not a number.
        ValueError: if it is NaN, infinite or outside [0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value
