"""Intended use: whether a film's patient is of the age the model was trained and validated for.

The shipped model was trained on chest films of children one to five years old (Kermany et al. 2018);
a score on an adult's film is a number the model was never shown to get right. Commercial chest AI
gates on age the same way. The range is site-editable data: ``intended_age_min_years`` and
``intended_age_max_years`` of the selection rules (:mod:`pneumonia_monai.dicom.selection`), both
inclusive, in completed years.

The patient's age at the examination is taken from, in this order:

1. Patient's Age (0010,1010), an AS value ``nnnD``, ``nnnW``, ``nnnM`` or ``nnnY``. An all-zero age
   (``000Y``, which equipment writes when it does not know the age) is not used;
2. Patient's Birth Date (0010,0030) with Study Date (0008,0020), else with Acquisition Date (0008,0022).

The result is ``yes``, ``no`` or ``unknown`` (nothing usable: no age, no birth date, dates that do not
parse or a birth after the examination), with the attributes it came from. The age itself is PHI (with
the dates it came from): it is never returned, logged or written, only the verdict and the attributes'
names. Values are read from the raw elements, so pydicom's validation never quotes one in a warning.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from pneumonia_monai import checks

#: Values of the ``intended_use`` column of the results.
YES = "yes"
NO = "no"
UNKNOWN = "unknown"
INTENDED_USE_VALUES: tuple[str, ...] = (YES, NO, UNKNOWN)

#: Oldest age, in years, a range bound may name.
MAX_AGE_YEARS = 150

_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_DATE = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})\s*$")
_DAYS_PER_YEAR = 365.2425

#: Attribute names cited in the result (keyword and tag, as PS3.6 lists them).
PATIENT_AGE = "Patient's Age (0010,1010)"
PATIENT_BIRTH_DATE = "Patient's Birth Date (0010,0030)"
STUDY_DATE = "Study Date (0008,0020)"
ACQUISITION_DATE = "Acquisition Date (0008,0022)"

#: The header keywords the assessment reads.
KEYWORDS: tuple[str, ...] = ("PatientAge", "PatientBirthDate", "StudyDate", "AcquisitionDate")


@dataclass(frozen=True)
class AgeRange:
    """The intended patient ages, in completed years, both bounds inclusive.

    Raises:
        TypeError: if a bound is not an integer.
        ValueError: if a bound is negative, above :data:`MAX_AGE_YEARS`, or ``min_years > max_years``.
    """

    min_years: int
    max_years: int

    def __post_init__(self) -> None:
        for name in ("min_years", "max_years"):
            value = getattr(self, name)
            checks.integer(name, value, what="an integer number of years")
            if not 0 <= value <= MAX_AGE_YEARS:
                raise ValueError(f"{name} must be in [0, {MAX_AGE_YEARS}], got {value!r}")
        if self.min_years > self.max_years:
            raise ValueError(f"min_years ({self.min_years}) is above max_years ({self.max_years})")

    def contains(self, years: int) -> bool:
        """Whether an age of ``years`` completed years is in the range."""
        return self.min_years <= years <= self.max_years

    def describe(self) -> str:
        """The range in words, e.g. ``patient age 1 to 5 years``."""
        return f"patient age {self.min_years} to {self.max_years} years"


@dataclass(frozen=True)
class IntendedUse:
    """The verdict for one film.

    Attributes:
        status: ``yes``, ``no`` or ``unknown``.
        basis: the attributes the age came from (empty for ``unknown``), never their values.
    """

    status: str
    basis: str = ""

    def __post_init__(self) -> None:
        if self.status not in INTENDED_USE_VALUES:
            raise ValueError(f"status must be one of {INTENDED_USE_VALUES}, got {self.status!r}")

    def describe(self, age_range: AgeRange) -> str:
        """Say what was decided without the age, e.g. ``outside patient age 1 to 5 years (from ...)``."""
        where = {YES: "within", NO: "outside"}.get(self.status)
        if where is None:
            return f"patient age unknown (no usable {PATIENT_AGE}, or {PATIENT_BIRTH_DATE} with a date)"
        return f"{where} {age_range.describe()} (from {self.basis})"


def _raw_text(ds: Dataset, keyword: str) -> str:
    """The value of ``keyword`` as text, read without pydicom's value validation (no warnings)."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return ""
    element = ds.get_item(tag)
    if element is None:
        return ""
    value = element.value  # bytes for an element pydicom has not converted yet
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \0")
    return str(value).strip()


def age_in_years(value: str) -> int | None:
    """Completed years of a Patient's Age (AS) value, or ``None`` if it is not one (or all zero).

    ``nnnD`` and ``nnnW`` count days and weeks (a year of 365.2425 days), ``nnnM`` months.
    """
    match = _AGE.match(value)
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2).upper()
    if number == 0:
        return None
    if unit == "Y":
        return number
    if unit == "M":
        return number // 12
    days = number * (7 if unit == "W" else 1)
    return int(days // _DAYS_PER_YEAR)


def _date(value: str) -> datetime.date | None:
    match = _DATE.match(value)
    if match is None:
        return None
    try:
        return datetime.date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def years_between(birth: datetime.date, on: datetime.date) -> int | None:
    """Completed years from ``birth`` to ``on``, or ``None`` if ``on`` is before ``birth``."""
    if on < birth:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def assess_intended_use(ds: Dataset, age_range: AgeRange) -> IntendedUse:
    """Tell whether the patient of ``ds`` is in ``age_range`` (see the module docstring for the sources).

    Args:
        ds: the film's header (at least the attributes of :data:`KEYWORDS` that it has).
        age_range: the intended ages.

    Raises:
        TypeError: if ``ds`` is not a Dataset or ``age_range`` not an :class:`AgeRange`.
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a pydicom Dataset, got {type(ds).__name__}")
    if not isinstance(age_range, AgeRange):
        raise TypeError(f"age_range must be an AgeRange, got {type(age_range).__name__}")
    years = age_in_years(_raw_text(ds, "PatientAge"))
    basis = PATIENT_AGE
    if years is None:
        birth = _date(_raw_text(ds, "PatientBirthDate"))
        if birth is not None:
            for keyword, name in (("StudyDate", STUDY_DATE), ("AcquisitionDate", ACQUISITION_DATE)):
                on = _date(_raw_text(ds, keyword))
                if on is not None:
                    years = years_between(birth, on)
                    basis = f"{PATIENT_BIRTH_DATE} and {name}"
                    break
    if years is None:
        return IntendedUse(UNKNOWN)
    return IntendedUse(YES if age_range.contains(years) else NO, basis)
