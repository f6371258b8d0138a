"""The value validators: one check of "an int", "a number", "a probability", used by every module.

Each validator returns the value normalised (``int`` or ``float``) or raises an error naming the value,
highdicom style: ``f"{name} must be {what}, got {value!r}"``, with the value's type added in parentheses
when the type is wrong. ``bool`` is never a number here (``True`` is an ``int`` to Python, not to a
config file). ``numbers.Integral`` and ``numbers.Real`` admit numpy scalars (``np.int64``,
``np.float32``), which are numbers to every caller.

- a value of the wrong type raises :class:`ValueTypeError`, a :class:`TypeError` that is also a
  :class:`ValueError` (as numpy's ``AxisError`` is both ``ValueError`` and ``IndexError``), so callers
  that refuse bad values with ``except ValueError`` refuse it too;
- a number outside its range raises :class:`ValueError`.

Torch-free and numpy-free: the result writers, the node and the CLI import it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


class ValueTypeError(TypeError, ValueError):
    """A value of the wrong type: a TypeError, and a ValueError for callers that catch ValueError."""


def _refuse_type(name: str, value: object, what: str) -> ValueTypeError:
    return ValueTypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")


def _bounds(kind: str, minimum: float | None, maximum: float | None, above: float | None) -> str:
    """``kind`` with its range in words: ``a positive int``, ``an int in [1, 65535]``, ``a number >= 0``..."""
    if above == 0 and maximum is None:
        return f"a positive {kind}"
    if minimum == 1 and maximum is None and kind == "int":
        return "a positive int"
    if minimum == 0 and maximum is None:
        return "a non-negative int" if kind == "int" else "a finite number >= 0"
    article = "an" if kind[0] in "aeiou" else "a"
    if minimum is not None and maximum is not None:
        return f"{article} {kind} in [{minimum:g}, {maximum:g}]"
    if above is not None:
        return f"{article} {kind} > {above:g}"
    if minimum is not None:
        return f"{article} {kind} >= {minimum:g}"
    if maximum is not None:
        return f"{article} {kind} <= {maximum:g}"
    return f"{article} {kind}"


def integer(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    what: str | None = None,
) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]`` (either end open).

    The arguments are :func:`number`'s (``name`` a parameter or config key; ``what`` by default from the
    bounds, e.g. ``"a positive int"``). A wrong type (``bool``, or a float such as ``1.0``) raises
    :class:`ValueTypeError`, an integer outside the bounds :class:`ValueError`.
    """
    what = what or _bounds("int", minimum, maximum, None)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _refuse_type(name, value, what)
    number(name, value, minimum=minimum, maximum=maximum, what=what)  # the bounds, checked once
    return int(value)


def positive_int(name: str, value: object, *, what: str | None = None) -> int:
    """:func:`integer` of at least 1 (``"{name} must be a positive int, got 0"``)."""
    return integer(name, value, minimum=1, what=what)


def non_negative_int(name: str, value: object, *, what: str | None = None) -> int:
    """:func:`integer` of at least 0."""
    return integer(name, value, minimum=0, what=what)


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    what: str | None = None,
) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number in range.

    Args:
        name: the value's name in the message.
        value: the value to check.
        minimum: the inclusive lower bound, ``None`` for none.
        maximum: the inclusive upper bound, ``None`` for none.
        above: an exclusive lower bound (``above=0``: a positive number), ``None`` for none.
        what: the message's description (default: from the bounds, e.g. ``"a number in [0, 1]"``).

    Raises:
        ValueTypeError: if ``value`` is not a real number (``bool`` included).
        ValueError: if it is NaN or infinite, or outside the bounds.
    """
    what = what or _bounds("number", minimum, maximum, above)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _refuse_type(name, value, what)
    real = float(value)
    if (
        not math.isfinite(real)
        or (minimum is not None and real < minimum)
        or (maximum is not None and real > maximum)
        or (above is not None and real <= above)
    ):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return real


def positive_number(name: str, value: object, *, what: str | None = None) -> float:
    """:func:`number` above 0 (``"{name} must be a positive number, got 0"``)."""
    return number(name, value, above=0.0, what=what)


def non_negative_number(name: str, value: object, *, what: str | None = None) -> float:
    """:func:`number` of at least 0."""
    return number(name, value, minimum=0.0, what=what)


def flag(name: str, value: object, *, command_line: bool = False) -> bool:
    """A bool (``numpy.bool_`` too), or :class:`ValueTypeError` (``"{name} must be true or false, ..."``).

    Nothing else is read as true or false: to Python ``bool("false")`` is ``True``. MONAI's command line
    (``python -m monai.bundle run ... --lung_crop false``, parsed by Fire) passes a bare ``false`` on as
    that string, so a loose check would keep a switch on that the user turned off. With
    ``command_line`` (the bundle keys a user overrides there) a string is refused with what to write
    instead: ``False``, a Python literal, which Fire parses as the bool.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    error = _refuse_type(name, value, "true or false")
    if command_line and isinstance(value, str):
        raise ValueTypeError(
            f"{error}: on the monai.bundle command line write --{name} True or --{name} False "
            "(Python literals; a bare true or false arrives as a string)"
        )
    raise error


def probability(name: str, value: object) -> float:
    """:func:`number` in [0, 1] (``"{name} must be a number in [0, 1], got 1.5"``)."""
    return number(name, value, minimum=0.0, maximum=1.0)


def rgb_image(name: str, value: object) -> np.ndarray:
    """Return ``value`` if it is a ``(rows, columns, 3)`` uint8 array; TypeError or ValueError naming it."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8, got dtype {value.dtype}")
    if value.ndim != 3 or value.shape[2] != 3 or min(value.shape[:2]) < 1:
        raise ValueError(f"{name} must have shape (rows, columns, 3), got {value.shape}")
    return value
