"""List the films of a folder for the bundle's own ``inference`` run."""

from __future__ import annotations

import logging
from pathlib import Path

from pneumonia_monai.dicom.header import is_dicom
from pneumonia_monai.formats import is_film_name
from pneumonia_monai.names import is_junk

logger = logging.getLogger(__name__)


def list_films(folder: str | Path) -> list[dict[str, str]]:
    """Return ``[{"image": path}, ...]`` for the films under ``folder``, sorted.

    Films are DICOM files and the pictures and research files of :mod:`pneumonia_monai.formats`
    (JPEG, PNG, TIFF, NIfTI, MetaImage, NRRD).

    DICOM files are recognised by their header, whatever their name. For triage of real DICOM
    archives (views, body parts, duplicates) use ``pneumonia-monai infer``, which applies the
    selection rules; this listing is for a folder of films already known to be chest frontals.

    Raises:
        FileNotFoundError: if ``folder`` does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    films = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or is_junk(path.relative_to(root)):
            continue
        if is_film_name(path) or is_dicom(path):
            films.append({"image": str(path)})
    logger.info("%d film(s) under %s", len(films), root)
    return films
