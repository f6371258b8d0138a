"""A site's own operating point: a threshold chosen on the site's labelled results, kept in a small file.

A model validated elsewhere can lose specificity on a shifted population. A site scores its own
labelled studies (``pneumonia-monai infer``, then ``pneumonia-monai evaluate --labels ...``), chooses
the threshold by a stated rule (``evaluate --choose-threshold RULE``) and writes a **site overlay**, a
small JSON file. ``infer --site FILE`` and ``serve --site FILE`` then call films with that threshold
instead of the bundle's, and say so in every results row (``operating_point``) and in every SR (an
Algorithm Parameter, TID 4019). Nothing is retrained.

Rules (the search itself is :func:`pneumonia_monai.evaluation.threshold.choose_threshold`):

``max-specificity@sensitivity>=X``
    the highest specificity among the thresholds that keep sensitivity >= X (X in (0, 1]);
``youden``
    the largest Youden index, sensitivity + specificity - 1.

The overlay file (:data:`OVERLAY_FORMAT` 1)::

    {"format": "pneumonia_monai site operating point", "version": 1,
     "site": "north-wing", "model_version": "0.3.0", "threshold": 0.73,
     "rule": "max-specificity@sensitivity>=0.95", "chosen_on": "2026-12-01",
     "n": 412, "n_pneumonia": 130, "n_normal": 282, "sensitivity": 0.954, "specificity": 0.911,
     "results": "results.csv"}

An overlay names the model version it was chosen for: a threshold is a property of one model's
probabilities, so an overlay of another version is refused (:class:`SiteOverlayError`). A threshold
chosen on a set and reported on the same set is optimistic; the figures say what it was chosen on,
not what it will achieve. The file holds no patient data: counts, rates, a date and names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumonia_monai import checks
from pneumonia_monai.atomic import write_json_atomic

if TYPE_CHECKING:
    from pneumonia_monai.inference.bundle import InferenceBundle

logger = logging.getLogger(__name__)

#: The ``format`` and ``version`` keys of an overlay file.
OVERLAY_FORMAT = "pneumonia_monai site operating point"
OVERLAY_VERSION = 1
#: Default file name of the overlay ``evaluate --choose-threshold`` writes into its output folder.
OVERLAY_FILE = "site_operating_point.json"

_MAX_SPEC = re.compile(r"^max-specificity@sensitivity>=(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")
#: A site name: letters, digits and ``. _ -``, 1 to 32 characters (it goes into LO and CSV cells).
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_KEYS = (
    "format",
    "version",
    "site",
    "model_version",
    "threshold",
    "rule",
    "chosen_on",
    "n",
    "n_pneumonia",
    "n_normal",
    "sensitivity",
    "specificity",
    "results",
)


class SiteOverlayError(ValueError):
    """A site overlay that cannot be used: unreadable, malformed, or for another model version."""


@dataclass(frozen=True)
class ThresholdRule:
    """A threshold rule as a site states it.

    Attributes:
        name: the rule of :func:`~pneumonia_monai.evaluation.threshold.choose_threshold`
            (``"max_specificity_at_sensitivity"`` or ``"youden"``).
        min_sensitivity: the sensitivity to keep (``max_specificity_at_sensitivity`` only).
    """

    name: str
    min_sensitivity: float | None = None

    def __str__(self) -> str:
        if self.name == "youden":
            return "youden"
        return f"max-specificity@sensitivity>={self.min_sensitivity:g}"


def parse_rule(text: str) -> ThresholdRule:
    """Parse ``"max-specificity@sensitivity>=0.95"`` or ``"youden"`` (case and spaces ignored).

    Raises:
        ValueError: for any other text, or a sensitivity outside (0, 1].
    """
    if not isinstance(text, str):
        raise TypeError(f"a threshold rule must be a string, got {type(text).__name__}")
    compact = "".join(text.split()).lower()
    if compact == "youden":
        return ThresholdRule("youden")
    match = _MAX_SPEC.match(compact)
    if match is None:
        raise ValueError(
            f"unknown threshold rule {text!r}: expected 'max-specificity@sensitivity>=X' (X in (0, 1]) "
            "or 'youden'"
        )
    value = float(match.group("value"))
    if not 0.0 < value <= 1.0:
        raise ValueError(f"threshold rule {text!r}: the sensitivity must lie in (0, 1], got {value:g}")
    return ThresholdRule("max_specificity_at_sensitivity", value)


def check_site_name(name: str) -> str:
    """Return ``name`` if it is 1 to 32 letters, digits, ``.``, ``_`` or ``-`` (starting alphanumeric).

    Raises:
        ValueError: otherwise (the name goes into every results row and SR: no free text).
    """
    if not isinstance(name, str) or not _SITE_NAME.match(name):
        raise ValueError(
            f"site name must be 1 to 32 letters, digits, '.', '_' or '-' starting with a letter or digit, "
            f"got {name!r}"
        )
    return name


@dataclass(frozen=True)
class SiteOperatingPoint:
    """A site's operating threshold and what it was chosen on.

    Attributes:
        site: the site's name (:func:`check_site_name`).
        model_version: the model version whose probabilities it was chosen on.
        threshold: a film is called pneumonia when ``prob_pneumonia >= threshold``.
        rule: the rule, as :class:`ThresholdRule` writes it.
        chosen_on: the date it was chosen (ISO 8601, ``YYYY-MM-DD``).
        n, n_pneumonia, n_normal: films it was chosen on, and of each class.
        sensitivity, specificity: on those films, at ``threshold``.
        results: the name of the results file it was chosen on (no folder).

    Raises:
        ValueError, TypeError: on construction, naming the bad value.
    """

    site: str
    model_version: str
    threshold: float
    rule: str
    chosen_on: str
    n: int
    n_pneumonia: int
    n_normal: int
    sensitivity: float
    specificity: float
    results: str = ""

    def __post_init__(self) -> None:
        check_site_name(self.site)
        if not isinstance(self.model_version, str) or not self.model_version.strip():
            raise ValueError(f"model_version must be a non-empty string, got {self.model_version!r}")
        object.__setattr__(self, "threshold", checks.probability("threshold", self.threshold))
        object.__setattr__(self, "rule", str(parse_rule(self.rule)))
        try:
            dt.date.fromisoformat(self.chosen_on)
        except (TypeError, ValueError):
            raise ValueError(f"chosen_on must be a date YYYY-MM-DD, got {self.chosen_on!r}") from None
        for name in ("n", "n_pneumonia", "n_normal"):
            checks.positive_int(name, getattr(self, name))
        if self.n_pneumonia + self.n_normal != self.n:
            raise ValueError(f"n_pneumonia {self.n_pneumonia} + n_normal {self.n_normal} is not n {self.n}")
        for name in ("sensitivity", "specificity"):
            object.__setattr__(self, name, checks.probability(name, getattr(self, name)))
        if not isinstance(self.results, str) or "/" in self.results or "\\" in self.results:
            raise ValueError(f"results must be a file name without folders, got {self.results!r}")

    @property
    def label(self) -> str:
        """What results rows and SRs record: ``site NAME: RULE on n=N (DATE)``."""
        return f"site {self.site}: {self.rule} on n={self.n} ({self.chosen_on})"

    def as_dict(self) -> dict[str, Any]:
        """The overlay file's content."""
        return {"format": OVERLAY_FORMAT, "version": OVERLAY_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SiteOperatingPoint:
        """Rebuild an operating point from :meth:`as_dict`.

        Raises:
            ValueError, TypeError: naming the missing, unknown or bad key.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a site overlay must be a JSON object, got {type(data).__name__}")
        if data.get("format") != OVERLAY_FORMAT:
            raise ValueError(f"'format' must be {OVERLAY_FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != OVERLAY_VERSION:
            raise ValueError(f"'version' must be {OVERLAY_VERSION}, got {data.get('version')!r}")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(name for name in fields - {"results"} if name not in data)
        if missing:
            raise ValueError(f"missing key(s) {missing}")
        return cls(**{name: data[name] for name in fields if name in data})


def choose_site_operating_point(
    y_true: Any,
    prob: Any,
    rule: ThresholdRule | str,
    *,
    site: str,
    model_version: str,
    chosen_on: dt.date | None = None,
    results: str = "",
) -> SiteOperatingPoint:
    """Choose a site's threshold on its labelled films by ``rule``.

    Args:
        y_true: ``(n,)`` labels, 0 normal and 1 pneumonia.
        prob: ``(n,)`` probabilities of pneumonia as ``infer`` wrote them.
        rule: a :class:`ThresholdRule` or its text (:func:`parse_rule`).
        site: the site's name.
        model_version: the model version of the probabilities.
        chosen_on: the date (default: today, UTC).
        results: the name of the results file (recorded).

    Raises:
        ValueError: for a bad rule or input, or a set without pneumonia films or without normal films.
    """
    import numpy as np

    from pneumonia_monai.evaluation.threshold import choose_threshold

    parsed = parse_rule(rule) if isinstance(rule, str) else rule
    kwargs = {} if parsed.min_sensitivity is None else {"min_sensitivity": parsed.min_sensitivity}
    choice = choose_threshold(y_true, prob, rule=parsed.name, **kwargs)
    y = np.asarray(y_true).astype(np.int64)
    n_pneumonia = int(np.count_nonzero(y == 1))
    day = chosen_on if chosen_on is not None else dt.datetime.now(dt.timezone.utc).date()
    point = SiteOperatingPoint(
        site=site,
        model_version=model_version,
        threshold=choice.threshold,
        rule=str(parsed),
        chosen_on=day.isoformat(),
        n=int(y.size),
        n_pneumonia=n_pneumonia,
        n_normal=int(y.size) - n_pneumonia,
        sensitivity=choice.sensitivity,
        specificity=choice.specificity,
        results=Path(results).name if results else "",
    )
    logger.info(
        "site %s operating point %.6g by %s on %d film(s): sensitivity %.4f, specificity %.4f",
        point.site,
        point.threshold,
        point.rule,
        point.n,
        point.sensitivity,
        point.specificity,
    )
    return point


def write_site_overlay(path: str | Path, point: SiteOperatingPoint) -> Path:
    """Write ``point`` as an overlay file, atomically; return its path."""
    if not isinstance(point, SiteOperatingPoint):
        raise TypeError(f"point must be a SiteOperatingPoint, got {type(point).__name__}")
    return write_json_atomic(path, point.as_dict(), indent=1, fsync=True)


def read_site_overlay(path: str | Path) -> SiteOperatingPoint:
    """Read and check an overlay file.

    Raises:
        SiteOverlayError: naming the file and what is wrong with it (it cannot be read, is not JSON,
            or a key is missing, unknown or invalid).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteOverlayError(f"site overlay {path} cannot be read: {exc}") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
        return SiteOperatingPoint.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise SiteOverlayError(f"site overlay {path}: {exc}") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def check_model_version(point: SiteOperatingPoint, model_version: str) -> None:
    """Refuse an operating point chosen for another model version.

    Raises:
        SiteOverlayError: when ``point.model_version`` is not ``model_version``.
    """
    if point.model_version != model_version:
        raise SiteOverlayError(
            f"site overlay of site {point.site!r} was chosen for model version {point.model_version!r}, "
            f"but this model is version {model_version!r}: a threshold belongs to one model's "
            "probabilities; choose it again on this model's results (evaluate --choose-threshold)"
        )


def apply_site(bundle: InferenceBundle, point: SiteOperatingPoint | None) -> InferenceBundle:
    """Return ``bundle`` calling films at the site's threshold (``bundle`` itself for ``None``).

    The returned bundle's ``threshold`` is the site's, its ``operating_point`` the site's
    :attr:`~SiteOperatingPoint.label`, and its ``fingerprint`` covers the overlay, so results made at
    another operating point are never reused for this one.

    Raises:
        SiteOverlayError: if the overlay is for another model version.
    """
    if point is None:
        return bundle
    if not isinstance(point, SiteOperatingPoint):
        raise TypeError(f"site must be a SiteOperatingPoint, got {type(point).__name__}")
    check_model_version(point, bundle.model_version)
    identity = json.dumps(point.as_dict(), sort_keys=True)
    fingerprint = hashlib.sha256(f"{bundle.fingerprint}\0site\0{identity}".encode()).hexdigest()
    logger.info(
        "site %s: threshold %.6g (bundle %.6g) by %s",
        point.site,
        point.threshold,
        bundle.threshold,
        point.rule,
    )
    return dataclasses.replace(
        bundle, threshold=point.threshold, operating_point=point.label, fingerprint=fingerprint
    )
