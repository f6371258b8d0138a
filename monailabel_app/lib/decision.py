"""The parts of the MONAI Label app that do not need MONAI Label: series resolution and the decision.

Kept apart from :mod:`lib.infers.pneumonia` so that they can be imported, and tested, where MONAI Label
itself cannot be imported (see ``monailabel_app/README.md``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.transforms import MapTransform

from pneumonia_monai.decision import is_pneumonia, pneumonia_probability
from pneumonia_monai.dicom.rules import SelectionRules
from pneumonia_monai.engine import bundle_config
from pneumonia_monai.triage import select_files

logger = logging.getLogger(__name__)

#: Name of the normal class in the bundle's ``class_names``; every other class is a kind of pneumonia.
NORMAL_CLASS = "normal"
#: Key under which :class:`ResolveChestFilmd` records the SOP Instance UID of the film it chose.
SOP_INSTANCE_UID_KEY = "sop_instance_uid"


class ResolveChestFilmd(MapTransform):
    """Replace a folder (a DICOM series) under ``keys`` by the path of its chest frontal CR/DX film.

    MONAI Label's DICOMweb datastore hands a task the folder of the series it downloaded; the bundle's
    preprocessing reads one file. A file is left as it is. In a folder, the first film selected by
    :func:`pneumonia_monai.triage.select_files` (sorted paths) is kept and its SOP Instance UID
    stored under :data:`SOP_INSTANCE_UID_KEY`.

    Args:
        keys: keys of the image paths.
        rules: selection rules (default: the package's).
        allow_missing_keys: don't raise on a missing key.

    Raises:
        ValueError: on call, if a folder holds no chest frontal CR/DX film (the first reasons are given),
            or a path is empty.
    """

    def __init__(
        self, keys: Any, rules: SelectionRules | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if rules is not None and not isinstance(rules, SelectionRules):
            raise TypeError(f"rules must be SelectionRules, got {type(rules).__name__}")
        self.rules = rules

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Resolve every folder under ``keys``."""
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], str | Path) and not str(d[key]).strip():
                # Path("") is the working folder: never scan it for a film nobody asked for.
                raise ValueError(f"{key!r} is an empty path (an image id the datastore does not know?)")
            path = Path(str(d[key]))
            if not path.is_dir():
                continue
            result = select_files([path], self.rules)
            if not result.selected:
                reasons = "; ".join(f"{x.relative_path}: {x.reason}" for x in result.decisions[:5])
                raise ValueError(f"no chest frontal CR/DX film in {path} ({reasons or 'empty folder'})")
            chosen = result.selected[0]
            if len(result.selected) > 1:
                logger.info(
                    "%d films selected in %s; classifying %s", len(result.selected), path, chosen.sop_uid
                )
            d[key] = str(chosen.path)
            d[SOP_INSTANCE_UID_KEY] = chosen.sop_uid
        return d


def check_threshold(threshold: Any) -> float:
    """Return the bundle's operating threshold as a float.

    The one threshold check: :func:`pneumonia_monai.engine.bundle_config.check_threshold`.

    Raises:
        ValueError: if it is not a number in [0, 1].
    """
    return bundle_config.check_threshold(threshold, "the bundle")


def classification_result(
    probabilities: Sequence[float], class_names: Sequence[str], threshold: float
) -> dict[str, Any]:
    """The bundle's decision for one film, as the app returns it.

    Args:
        probabilities: softmax outputs, one per class.
        class_names: the bundle's ``class_names`` (must include ``"normal"``).
        threshold: the operating point: pneumonia when ``1 - p(normal) >= threshold``.

    Returns:
        ``label`` (``"pneumonia"`` or ``"normal"``), ``prob_pneumonia``, ``threshold`` and
        ``probabilities`` (class name -> probability).

    Raises:
        ValueError: if the sizes differ, ``"normal"`` is not a class, the values are not probabilities
            or the threshold is out of range.
    """
    names = [str(c) for c in class_names]
    probs = [float(p) for p in probabilities]
    if len(probs) != len(names):
        raise ValueError(f"{len(probs)} outputs for the classes {names}")
    if NORMAL_CLASS not in names:
        raise ValueError(f"class_names must include {NORMAL_CLASS!r}, got {names}")
    if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs) or not math.isclose(
        sum(probs), 1.0, abs_tol=1e-4
    ):
        raise ValueError(f"not probabilities: {probs}")
    threshold = check_threshold(threshold)
    prob_pneumonia = pneumonia_probability(probs, names)
    present = is_pneumonia(prob_pneumonia, threshold)
    return {
        "label": "pneumonia" if present else NORMAL_CLASS,
        "prob_pneumonia": prob_pneumonia,
        "threshold": threshold,
        "probabilities": dict(zip(names, probs, strict=True)),
    }
