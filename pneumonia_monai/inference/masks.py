"""``--masks`` outputs: lung fields and heatmap as NIfTI on the film's own grid; a DICOM SEG for DICOM.

For every ``ok`` film, ``infer --masks`` writes into ``OUT/masks/``:

- ``<name>.lungs.nii.gz``: the lung fields the crop was built on
  (:func:`~pneumonia_monai.transforms.lung_crop.lung_field_mask`), ``uint8`` 0/1, NIfTI intent *label*;
- ``<name>.heatmap.nii.gz``: the Grad-CAM of the network input laid back onto the film (:func:`cam_on_film`),
  ``float32`` in [0, 1] inside the crop, 0 outside;
- for a DICOM film, ``<SOPInstanceUID>.seg.dcm``: the lung fields as a binary DICOM Segmentation that
  references it (:func:`pneumonia_monai.dicom.seg.build_lung_seg`).

``<name>`` is the film's path relative to its input with ``/`` as ``__``, as for the heatmap PNGs.

Both NIfTI files lie on **the input film's grid and affine**
(:class:`~pneumonia_monai.transforms.volume_io.FilmGrid`): for a NIfTI, MetaImage or NRRD film, its own
voxel grid (same shape, same affine in RAS+), so they overlay it in 3D Slicer or ITK-SNAP as they are;
for a JPEG, PNG, TIFF or DICOM film, the grid ITK gives a 2-D picture (identity direction, columns along
the first axis), with the DICOM Pixel Spacing (else Imager Pixel Spacing) as voxel size, so they overlay
the same picture loaded by Slicer. Where no plausible lung fields were found (the crop fell back to the
whole film), no lung mask and no SEG are written (the log says so); the heatmap still is.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumonia_monai.atomic import write_bytes_atomic
from pneumonia_monai.transforms.volume_io import FilmGrid
from pneumonia_monai.visualize.overlay import box_pixels

logger = logging.getLogger(__name__)

#: Sub-folder of the output folder for the masks.
MASK_DIR = "masks"
#: Suffixes of the two NIfTI files of a film.
LUNGS_SUFFIX = ".lungs.nii.gz"
HEATMAP_SUFFIX = ".heatmap.nii.gz"
#: Suffix of a DICOM film's Segmentation (``<SOPInstanceUID>.seg.dcm``).
SEG_SUFFIX = ".seg.dcm"
#: NIfTI intent code of a label map (NIFTI_INTENT_LABEL).
_INTENT_LABEL = "label"


def mask_names(stem: str) -> tuple[str, str]:
    """The names of a film's lung-mask and heatmap NIfTI files, from its output stem.

    The stem is the job's :attr:`~pneumonia_monai.inference.film_step.FilmJob.output_name` (its relative
    path with ``/`` as ``__``, plus a digest where two inputs share it); a ``/`` left in it becomes ``__``.
    """
    stem = stem.replace("/", "__")
    return stem + LUNGS_SUFFIX, stem + HEATMAP_SUFFIX


def load_film_and_grid(path: str | Path) -> tuple[np.ndarray, dict[str, Any], FilmGrid]:
    """Load a film for display (:func:`~pneumonia_monai.transforms.io.load_film`) with the grid it lies on.

    Returns:
        ``(film, facts, grid)``: the display array, the loader's facts and the film's :class:`FilmGrid`.

    Raises:
        ImageLoadError: if the film cannot be loaded.
    """
    from pneumonia_monai.dicom.io import is_dicom
    from pneumonia_monai.transforms import volume_io
    from pneumonia_monai.transforms.io import load_film

    path = Path(path)
    dicom = is_dicom(path)
    if not dicom and volume_io.is_volume_film(path):
        return volume_io.load_volume_film(path)
    film, facts = load_film(path)
    spacing = _dicom_spacing(path) if dicom else (1.0, 1.0)
    return film, facts, FilmGrid.for_picture(film.shape[0], film.shape[1], spacing)


def _dicom_spacing(path: Path) -> tuple[float, float]:
    """Pixel Spacing (0028,0030), else Imager Pixel Spacing (0018,1164), in mm; else 1 mm."""
    from pydicom import dcmread

    header = dcmread(
        path, stop_before_pixels=True, force=True, specific_tags=["PixelSpacing", "ImagerPixelSpacing"]
    )
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = [float(v) for v in header.get(keyword) or ()]
        except (TypeError, ValueError):
            continue
        if len(value) == 2 and min(value) > 0 and all(np.isfinite(value)):
            return value[0], value[1]
    return 1.0, 1.0


def cam_on_film(cam: np.ndarray, box: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """Lay a Grad-CAM of the network input (the crop, resized) back onto the film: float32 of ``shape``.

    The map is resized (bilinear) onto the crop's pixels (:func:`~.heatmap.box_pixels`, as the overlays
    place it); outside the crop the film gets 0.

    Raises:
        ValueError: if ``cam`` is not a 2-D map in [0, 1] or ``box`` is not a crop.
    """
    from PIL import Image

    heat = np.asarray(cam, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0 or not np.all(np.isfinite(heat)):
        raise ValueError(f"cam must be a finite 2-D map, got shape {heat.shape}")
    if float(heat.min()) < 0.0 or float(heat.max()) > 1.0:
        raise ValueError(f"cam values must be in [0, 1], got [{heat.min()}, {heat.max()}]")
    rows, cols = (int(n) for n in shape)
    r0, r1, c0, c1 = box_pixels(box, rows, cols)
    placed = np.zeros((rows, cols), dtype=np.float32)
    resized = Image.fromarray(heat, mode="F").resize((c1 - c0, r1 - r0), Image.Resampling.BILINEAR)
    placed[r0:r1, c0:c1] = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return placed


def write_nifti_atomic(
    image: np.ndarray, grid: FilmGrid, path: str | Path, *, label: bool, description: str
) -> Path:
    """Write a display ``(rows, columns)`` array as a gzipped NIfTI-1 on ``grid`` (its shape and affine).

    Args:
        image: the array on the film's display grid (:attr:`FilmGrid.display_shape`).
        grid: the film's grid.
        path: destination (``.nii.gz``); written atomically.
        label: a 0/1 label map (``uint8``, intent *label*) rather than a float32 map in [0, 1].
        description: the NIfTI ``descrip`` (at most 80 ASCII characters; no patient data).

    Raises:
        ValueError: if the array is not of the grid's display shape or the description is too long.
    """
    import nibabel as nib

    if len(description) > 80 or not description.isascii():
        raise ValueError(f"description must be at most 80 ASCII characters, got {description!r}")
    data = grid.from_display(np.asarray(image).astype(np.uint8 if label else np.float32))
    img = nib.Nifti1Image(data, grid.affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode("ascii")
    if label:
        img.header.set_intent(_INTENT_LABEL)
    else:
        img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
    return write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
