"""Writing DICOM objects to files: every SR, Secondary Capture and Segmentation the package makes.

:func:`write_dataset_atomic` writes a dataset as a DICOM Part 10 file (PS3.10: preamble, ``DICM``
prefix, File Meta Information) through the package's one atomic writer,
:func:`pneumonia_monai.atomic.atomic_open`: readers never see a partial file, and with ``fsync=True``
the file is on disk before the call returns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom

from pneumonia_monai.atomic import atomic_open

logger = logging.getLogger(__name__)


def write_dataset_atomic(ds: pydicom.Dataset, path: str | Path, *, fsync: bool = False) -> None:
    """Write ``ds`` as a DICOM Part 10 file; readers never see a partial file.

    The file is written with ``enforce_file_format=True`` (pydicom checks the File Meta Information)
    through :func:`pneumonia_monai.atomic.atomic_open` (a temporary file in the destination's folder,
    then a rename).

    Args:
        ds: dataset with file meta information (as highdicom builds it).
        path: destination; missing folders are created.
        fsync: make the write durable (:mod:`pneumonia_monai.atomic`).

    Raises:
        TypeError: if ``ds`` is not a pydicom Dataset.
    """
    if not isinstance(ds, pydicom.Dataset):
        raise TypeError(f"ds must be a pydicom.Dataset, got {type(ds).__name__}")
    with atomic_open(path, "wb", fsync=fsync) as fp:
        ds.save_as(fp, enforce_file_format=True)
