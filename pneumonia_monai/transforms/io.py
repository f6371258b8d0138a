"""Load a chest film, JPEG/PNG or DICOM, as one channel of display intensities in [0, 1].

Training, evaluation and inference all load through :class:`LoadChestXRayd`, so a film gives the same
tensor whatever its format: a JPEG's 8-bit grey levels are divided by 255; a DICOM object goes through
the grayscale pipeline of :mod:`pneumonia_monai.dicom.pixels` (Modality LUT, VOI LUT, polarity,
padding, scaling by the VOI output range), whose output is on the same display scale. A 16-bit PNG or
TIFF, and a NIfTI, MetaImage or NRRD film (:mod:`pneumonia_monai.transforms.volume_io`: reoriented to a
frontal view by its affine), carry no VOI: they are scaled by the rule of
:func:`~pneumonia_monai.transforms.volume_io.display_intensities`.

The array is ``(1, rows, columns)``: channel first, row-major, as stored (no transpose).

With ``min_side`` (set by :class:`~pneumonia_monai.transforms.pipeline.ChestXRayPreprocessd` from the
network input when ``reduced_decode`` is on), a large film is decoded at a reduced resolution whose
shorter side stays at least ``min_side`` pixels (:mod:`pneumonia_monai.dicom.reduced`): a JPEG with
DCT-domain scaling, a DICOM film as that module says; other rasters (PNG) are decoded whole, then
block-averaged.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from PIL import Image

from pneumonia_monai import checks

logger = logging.getLogger(__name__)

#: PIL modes read as 8-bit grey levels (RGB is reduced by ITU-R BT.601 luma, as PIL's ``convert("L")``).
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr"})
#: PIL modes of 16-bit greyscale PNGs.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})


class ImageLoadError(ValueError):
    """A film that cannot be loaded; the message says why."""


def load_raster(path: str | Path, *, min_side: int | None = None) -> np.ndarray:
    """Load a JPEG/PNG as a float32 ``(rows, columns)`` array in [0, 1].

    With ``min_side``, a film whose shorter side is at least twice that is reduced by the largest
    power of two that keeps it at least ``min_side``
    (:func:`~pneumonia_monai.dicom.reduced.reduction_factor`): a JPEG in the DCT domain
    (libjpeg-turbo's scaled decoding, Pillow's draft mode), other formats by
    block averages of the decoded grey levels.

    The image's size is checked against the pixel budget (:func:`pneumonia_monai.dicom.limits.max_pixels`,
    also Pillow's ``MAX_IMAGE_PIXELS``) from its header, before it is decoded.

    Raises:
        ImageLoadError: if the file is missing, not an image, of an unsupported mode, or over the pixel
            budget.
    """
    from pneumonia_monai.dicom import limits  # sets Pillow's MAX_IMAGE_PIXELS to the pixel budget
    from pneumonia_monai.dicom.reduced import block_average, reduction_factor

    path = Path(path)
    try:
        with Image.open(path) as img:  # reads the header only: the size is known before decoding
            columns, rows = img.size
            try:
                limits.check_decoded_size(rows, columns, bits_allocated=8, source=f"{img.format} header")
            except limits.SizeLimitError as exc:
                raise ImageLoadError(f"{exc}; not decoded") from None
            ticket = limits.film_ticket(rows * columns)  # given back when the array returned is garbage
            try:
                factor = reduction_factor(rows, columns, min_side)
                if factor > 1 and img.format == "JPEG":
                    img.draft(img.mode, (columns // factor, rows // factor))  # DCT scaling 1/factor
                    factor = 1  # the decoder did it
                img.load()
                mode = img.mode
                if mode in _EIGHT_BIT_MODES:
                    grey = np.asarray(img.convert("L"), dtype=np.float32)
                    return ticket.attach(block_average(grey, factor) / 255.0)
                if mode in _SIXTEEN_BIT_MODES:  # no VOI: the rule of the research formats
                    from pneumonia_monai.transforms.volume_io import display_intensities

                    arr = display_intensities(np.asarray(img))
                    return ticket.attach(block_average(arr, factor))
            except BaseException:
                ticket.release()
                raise
            ticket.release()
    except FileNotFoundError:
        raise ImageLoadError(f"file not found: {path}") from None
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice MAX_IMAGE_PIXELS
        raise ImageLoadError(f"image too large ({exc}); not decoded") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises these for unreadable or truncated images
        raise ImageLoadError(f"not a readable image ({exc.__class__.__name__}: {exc})") from exc
    raise ImageLoadError(f"unsupported image mode {mode!r} (expected 8-bit grey/RGB or 16-bit grey)")


def load_film(path: str | Path, *, min_side: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Load a film of any supported format; DICOM is recognised by its header, not its name.

    ``min_side``: decode at a reduced resolution whose shorter side is at least this (None: whole).

    Returns:
        ``(image, meta)``: a float32 ``(rows, columns)`` array in [0, 1] and non-PHI facts about the
        file (``format``, and for DICOM the UIDs, modality, view ...).

    Raises:
        ImageLoadError: if the file cannot be loaded (``DicomReadError`` is one of these for DICOM).
    """
    from pneumonia_monai.dicom import io as dicom_io  # the DICOM stack is imported only when used

    path = Path(path)
    if dicom_io.is_dicom(path):
        try:
            image, meta = dicom_io.read_image(path, min_side=min_side)
        except dicom_io.DicomReadError as exc:
            raise ImageLoadError(str(exc)) from exc
        return image, {"format": "dicom", **meta}
    from pneumonia_monai.transforms import volume_io

    if volume_io.is_volume_film(path):  # NIfTI, MetaImage, NRRD: reoriented, decoded whole
        image, facts, _ = volume_io.load_volume_film(path)
        return image, facts
    return load_raster(path, min_side=min_side), {"format": "raster"}


class LoadChestXRay(Transform):
    """Load a film path into a ``(1, rows, columns)`` float32 :class:`~monai.data.MetaTensor`.

    Args:
        min_side: decode large films at a reduced resolution whose shorter side is at least this many
            pixels (:mod:`pneumonia_monai.dicom.reduced`); None (the default) decodes every pixel.
    """

    def __init__(self, min_side: int | None = None) -> None:
        if min_side is not None:
            checks.positive_int("min_side", min_side, what="None or a positive int")
        self.min_side = min_side

    def __call__(self, path: str | Path) -> MetaTensor:
        """Load ``path``; the meta dictionary holds ``filename_or_obj``, ``format`` and ``spatial_shape``."""
        image, facts = load_film(path, min_side=self.min_side)
        # Only keys every format has, so that a batch mixing JPEG and DICOM films collates.
        meta = {
            "filename_or_obj": str(path),
            "format": facts["format"],
            "spatial_shape": np.asarray(image.shape),
        }
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(image))[None], meta=meta)


class LoadChestXRayd(MapTransform):
    """Dictionary version of :class:`LoadChestXRay`: replaces each path under ``keys`` by its image."""

    def __init__(
        self, keys: KeysCollection, allow_missing_keys: bool = False, min_side: int | None = None
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadChestXRay(min_side=min_side)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every path under ``keys``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
