"""Read the Kaggle / Mendeley chest X-ray trees (Kermany et al. 2018) into image records.

The Kaggle archive (``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg``) comes with Mac junk
(``__MACOSX/``, ``._*`` resource forks, ``.DS_Store``: :func:`pneumonia_monai.names.is_junk`) and,
depending on how it was unpacked, a nested ``chest_xray/chest_xray`` copy of itself. The Mendeley V3
release names files ``NORMAL-<patient>-<n>``, ``BACTERIA-<patient>-<n>`` and ``VIRUS-<patient>-<n>``.

Labels come from the class folder; the pneumonia subtype and the patient id come from the file name:

=============================== ============ =========== ===================
file name                       label        subtype     patient id
=============================== ============ =========== ===================
``person123_bacteria_456.jpeg`` pneumonia    bacterial   ``person123``
``person45_virus_99_2.jpeg``    pneumonia    viral       ``person45``
``IM-0115-0001.jpeg``           normal       none        ``IM-0115``
``NORMAL2-IM-0336-0001.jpeg``   normal       none        ``NORMAL2-IM-0336``
``BACTERIA-1008087-0001.jpeg``  pneumonia    bacterial   ``1008087``
``NORMAL-1003233-0001.jpeg``    normal       none        ``1003233``
=============================== ============ =========== ===================

Mendeley patient ids are the bare number, so a patient filed under two classes stays one group.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pneumonia_monai.formats import film_stem, is_film_name
from pneumonia_monai.names import is_junk

logger = logging.getLogger(__name__)

#: Image suffixes read from a Kaggle-style tree (case-insensitive).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png"})
#: Class folder name (upper case) -> label.
CLASS_FOLDERS: dict[str, str] = {"NORMAL": "normal", "PNEUMONIA": "pneumonia"}
#: Official split folder names.
SPLIT_FOLDERS: frozenset[str] = frozenset({"train", "test", "val"})

_PERSON = re.compile(r"^(?P<pid>person\d+)_(?P<kind>bacteria|virus)_\d+(?:_\d+)*$", re.IGNORECASE)
_KAGGLE_NORMAL = re.compile(r"^(?P<pid>(?:NORMAL\d*-)?IM-\d+)(?:-\d+)+$", re.IGNORECASE)
_MENDELEY = re.compile(r"^(?P<kind>NORMAL|BACTERIA|VIRUS)-(?P<pid>\d+)-\d+(?:-\d+)*$", re.IGNORECASE)
_SUBTYPE_WORDS = {"bacteria": "bacterial", "virus": "viral", "normal": "none"}


@dataclass(frozen=True)
class ImageRecord:
    """One film of a Kaggle-style tree.

    Attributes:
        image: path of the image file.
        label: ``"normal"`` or ``"pneumonia"`` (from the class folder).
        subtype: ``"none"`` for normal films, ``"bacterial"`` / ``"viral"`` from the name, ``"unknown"``
            for a pneumonia film whose name does not say.
        patient_id: the patient the name points to; a name that follows no known pattern is its own
            patient (its stem), which keeps the split honest at the cost of some grouping.
        source_split: the official split folder it came from (``train``, ``test``, ``val``) or ``""``.
    """

    image: str
    label: str
    subtype: str
    patient_id: str
    source_split: str = ""

    def as_dict(self) -> dict[str, str]:
        """Return the record as a plain dictionary."""
        return asdict(self)


def parse_name(stem: str, label: str) -> tuple[str, str]:
    """Return ``(subtype, patient_id)`` for a file stem under a class folder with ``label``.

    Args:
        stem: the file name without its suffix, e.g. ``"person123_bacteria_456"``.
        label: ``"normal"`` or ``"pneumonia"``, from the folder.

    Raises:
        ValueError: if ``label`` is not a known label.
    """
    if label not in CLASS_FOLDERS.values():
        raise ValueError(f"label must be one of {sorted(CLASS_FOLDERS.values())}, got {label!r}")
    for pattern in (_PERSON, _MENDELEY):
        match = pattern.match(stem)
        if match:
            subtype = _SUBTYPE_WORDS[match["kind"].lower()]
            if label == "normal" and subtype != "none":
                logger.warning(
                    "%s is in a NORMAL folder but its name says %s; keeping the folder", stem, subtype
                )
                subtype = "none"
            elif label == "pneumonia" and subtype == "none":
                logger.warning("%s is in a PNEUMONIA folder but its name says normal; subtype unknown", stem)
                subtype = "unknown"
            return subtype, match["pid"]
    match = _KAGGLE_NORMAL.match(stem)
    if match:
        return ("none" if label == "normal" else "unknown"), match["pid"].upper()
    logger.debug("%s follows no known naming pattern: it is its own patient", stem)
    return ("none" if label == "normal" else "unknown"), stem


def _class_and_split(rel: Path) -> tuple[str, str] | None:
    """Find the class folder (and the split folder above it) in a path relative to the root."""
    parts = rel.parts[:-1]
    for i in range(len(parts) - 1, -1, -1):
        label = CLASS_FOLDERS.get(parts[i].upper())
        if label is not None:
            split = parts[i - 1].lower() if i > 0 and parts[i - 1].lower() in SPLIT_FOLDERS else ""
            return label, split
    return None


def _dedup_key(rel: Path) -> tuple[str, ...]:
    """Key that is equal for a file and its copy in a nested ``chest_xray/chest_xray`` duplicate."""
    parts = [p for p in rel.parts if p.lower() != "chest_xray"]
    return tuple(parts)


def iter_image_files(root: Path) -> Iterator[Path]:
    """Yield film files under ``root`` in sorted order, skipping Mac and Windows junk.

    Films are recognised by their names (:data:`pneumonia_monai.formats.FILM_SUFFIXES`: JPEG, PNG,
    TIFF, NIfTI, MetaImage, NRRD).
    """
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if is_junk(rel) or not path.is_file() or not is_film_name(path):
            continue
        yield path


def scan_kaggle_tree(root: str | Path) -> list[ImageRecord]:
    """Return one record per distinct film under a Kaggle or Mendeley tree.

    Args:
        root: the folder that holds ``train/``, ``test/``, ``val/`` (or ``chest_xray/``, or just
            ``NORMAL/`` and ``PNEUMONIA/``).

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        ValueError: if no image under a ``NORMAL``/``PNEUMONIA`` folder is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    records: list[ImageRecord] = []
    seen: dict[tuple[str, ...], Path] = {}
    unlabelled = 0
    # Shallowest copy first, so that the nested chest_xray/chest_xray duplicate is the one dropped.
    files = sorted(iter_image_files(root), key=lambda p: (len(p.relative_to(root).parts), str(p)))
    for path in files:
        rel = path.relative_to(root)
        found = _class_and_split(rel)
        if found is None:
            unlabelled += 1
            logger.debug("skipping %s: not under a NORMAL or PNEUMONIA folder", rel)
            continue
        key = _dedup_key(rel)
        if key in seen:
            logger.debug("skipping %s: duplicate of %s (nested chest_xray copy)", rel, seen[key])
            continue
        seen[key] = rel
        label, split = found
        subtype, patient_id = parse_name(film_stem(path), label)
        records.append(ImageRecord(str(path), label, subtype, patient_id, split))
    records.sort(key=lambda r: r.image)
    if unlabelled:
        logger.info(
            "%d image(s) under %s are outside NORMAL/PNEUMONIA folders and were ignored", unlabelled, root
        )
    if not records:
        raise ValueError(f"no images under NORMAL/ or PNEUMONIA/ folders in {root}")
    logger.info(
        "found %d images of %d patients in %s", len(records), len({r.patient_id for r in records}), root
    )
    return records


def count_by(records: Iterable[ImageRecord], field: str) -> dict[str, int]:
    """Count records by the value of one field (``label``, ``subtype``, ``source_split`` ...)."""
    counts: dict[str, int] = {}
    for record in records:
        value = getattr(record, field)
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))
