"""The value validators of :mod:`pneumonia_monai.checks`: what they accept, and the messages they give."""

from __future__ import annotations

import numpy as np
import pytest

from pneumonia_monai import checks


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: checks.positive_int("batch_size", 0),
            ValueError,
            "batch_size must be a positive int, got 0",
        ),
        (lambda: checks.positive_int("n", True), TypeError, r"n must be a positive int, got True \(bool\)"),
        (lambda: checks.positive_int("n", 2.0), TypeError, r"n must be a positive int, got 2\.0 \(float\)"),
        (
            lambda: checks.non_negative_int("workers", -1),
            ValueError,
            "workers must be a non-negative int, got -1",
        ),
        (
            lambda: checks.integer("port", 70000, minimum=1, maximum=65535),
            ValueError,
            r"port must be an int in \[1, 65535\], got 70000",
        ),
        (
            lambda: checks.integer("num_folds", 1, minimum=2),
            ValueError,
            "num_folds must be an int >= 2, got 1",
        ),
        (
            lambda: checks.probability("threshold", 1.5),
            ValueError,
            r"threshold must be a number in \[0, 1\], got 1\.5",
        ),
        (
            lambda: checks.probability("threshold", "0.5"),
            TypeError,
            r"threshold must be a number in \[0, 1\], got '0\.5' \(str\)",
        ),
        (
            lambda: checks.probability("p", float("nan")),
            ValueError,
            r"p must be a number in \[0, 1\], got nan",
        ),
        (
            lambda: checks.positive_number("timeout", 0),
            ValueError,
            "timeout must be a positive number, got 0",
        ),
        (
            lambda: checks.non_negative_number("stable_seconds", float("inf")),
            ValueError,
            "stable_seconds must be a finite number >= 0, got inf",
        ),
        (
            lambda: checks.positive_number("max_wait", -1, what="a positive number of seconds or None"),
            ValueError,
            "max_wait must be a positive number of seconds or None, got -1",
        ),
    ],
)
def test_refusals_name_the_value(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


def test_a_wrong_type_is_a_type_error_that_except_value_error_also_catches() -> None:
    with pytest.raises(checks.ValueTypeError) as info:
        checks.positive_int("queue_size", "8")
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError) as out_of_range:
        checks.positive_int("queue_size", 0)
    assert not isinstance(out_of_range.value, TypeError)  # a number out of range is no type error


def test_numbers_come_back_normalised_numpy_scalars_included() -> None:
    assert checks.positive_int("n", np.int64(3)) == 3 and type(checks.positive_int("n", np.int64(3))) is int
    assert checks.probability("p", np.float32(0.25)) == 0.25
    assert type(checks.probability("p", 1)) is float
    assert checks.non_negative_number("s", 0) == 0.0
    assert checks.integer("fold", 4, minimum=0, maximum=4) == 4


def test_flag_takes_bools_only_and_says_what_to_type_for_a_string() -> None:
    assert checks.flag("lung_crop", True) is True and checks.flag("lung_crop", np.bool_(False)) is False
    with pytest.raises(checks.ValueTypeError, match=r"lung_crop must be true or false, got 0 \(int\)$"):
        checks.flag("lung_crop", 0, command_line=True)
    with pytest.raises(checks.ValueTypeError, match=r"masks must be true or false, got 'false' \(str\)$"):
        checks.flag("masks", "false")  # a config file's string: no command-line advice
    # bool("false") is True: a loose check would keep the crop on when the command line said false
    with pytest.raises(
        checks.ValueTypeError,
        match=r"lung_crop must be true or false, got 'false' \(str\): on the monai.bundle command line "
        r"write --lung_crop True or --lung_crop False",
    ):
        checks.flag("lung_crop", "false", command_line=True)
